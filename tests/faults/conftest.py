"""The fault-injection suite: every test here carries the `faults` marker (`make test-faults`)."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from vidssl.shards import read_manifest, verify_output
from vidssl.shards.attempts import remove_dead_attempts

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.faults)


@dataclass
class FaultCase:
    runs: int = 0
    survived: int = 0


_TALLY: dict[str, FaultCase] = {}


@pytest.fixture
def tally(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """`tally(survived: bool)` counts one injected fault of this test for the summary table."""
    case = _TALLY.setdefault(request.node.name, FaultCase())

    def count(survived: bool) -> None:
        case.runs += 1
        case.survived += int(survived)

    return count


def kill(process) -> bool:  # type: ignore[no-untyped-def]
    """SIGKILL `process`; True if it was still running (a fault injected, not a no-op)."""
    process.send_signal(signal.SIGKILL)
    return process.wait() == -signal.SIGKILL


def forget_output(store, url: str) -> None:  # type: ignore[no-untyped-def]
    """Make a published output unfinished again, as if it had never been published."""
    prefix = store.key_of(url)
    store.delete(f"{prefix}/manifest.json")
    remove_dead_attempts(store, prefix)
    assert list(store.list(prefix + "/")) == []


def shard_digests(store, url: str) -> list[str]:  # type: ignore[no-untyped-def]
    manifest = read_manifest(store, store.key_of(url))
    return [shard.sha256 for split in manifest.splits.values() for shard in split.shards]


def assert_only_the_output_is_left(store, url: str) -> None:  # type: ignore[no-untyped-def]
    """The output verifies, and once dead attempts are removed (what the next run does) only
    the published attempt's folder and the manifest remain: no leases, no orphans."""
    prefix = store.key_of(url)
    assert verify_output(store, prefix) == []
    remove_dead_attempts(store, prefix)
    published = read_manifest(store, prefix).attempt
    folders = {
        info.key.removeprefix(prefix + "/").split("/")[:2][-1] for info in store.list(prefix)
    }
    assert folders == {published, "manifest.json"}, folders


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """The table the README's reliability section quotes: faults injected and survived."""
    if not _TALLY:
        return
    terminalreporter.section("faults injected")
    for name, case in sorted(_TALLY.items()):
        terminalreporter.write_line(f"{name:<70} {case.runs:>4} runs {case.survived:>4} survived")
    runs = sum(c.runs for c in _TALLY.values())
    survived = sum(c.survived for c in _TALLY.values())
    terminalreporter.write_line(f"{len(_TALLY)} cases, {runs} faults, {survived} survived")
