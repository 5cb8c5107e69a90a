"""The fault-injection suite: every test here carries the `faults` marker (`make test-faults`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

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
