"""Saving and loading training state without pickled code.

Everything read back from the store (checkpoints, `final.pt`) is loaded with
`torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts only. A file that
needs anything else (a crafted pickle that would run a command when unpickled, or a foreign
object) is refused with an error naming it, and nothing in it runs. What we save therefore holds
only such values: state dicts, the optimizer's state dict, plain-JSON histories and configs.
"""

from __future__ import annotations

import io
import pickle
import zipfile

import torch

from vidssl.errors import VidsslError


class UnsafeCheckpointError(VidsslError):
    """A checkpoint or model file holds more than weights, or is no torch file at all."""


def state_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_state(data: bytes, where: str, map_location: str | torch.device = "cpu") -> dict:
    """The saved dict in `data` (the file at `where`), loaded with weights_only=True."""
    if not zipfile.is_zipfile(io.BytesIO(data)):  # torch.save has written zip archives since 1.6
        raise UnsafeCheckpointError(f"{where}: not a readable torch file (no zip archive)")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        reason = next((line for line in first if "Unsupported" in line), first[0] if first else "")
        raise UnsafeCheckpointError(
            f"{where}: refused: it holds more than tensors and plain values, so loading it "
            f"could run code ({reason.strip()})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise UnsafeCheckpointError(f"{where}: not a readable torch file: {exc}") from None
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(f"{where}: expected a saved dict, found {type(state).__name__}")
    return state
