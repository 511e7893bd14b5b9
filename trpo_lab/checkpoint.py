"""Checkpoints: one file holding what resuming and evaluating a run need.

`checkpoints/last.pt` (the latest iteration, with the training state that exact
resume needs) and `checkpoints/best.pt` (the policy of the best deterministic
evaluation so far, with its `eval_return`) are replaced atomically, so a run
killed while saving keeps its previous checkpoint intact. Saving `last.pt`
first moves the one before it to `previous.pt`.

A checkpoint is data, never code (README, "Security"): it is read with
`torch.load(..., weights_only=True)`, which unpickles tensors and plain
containers only. Numpy arrays and scalars (the environments' states, numpy
RNG states) are stored as {dtype, shape, raw bytes} records and come back bit
for bit. The file holds {"format", "sha256", "payload"}: the payload is the
torch-serialised state, and its SHA-256 catches a truncated or altered file,
including bytes flipped inside tensor data. A `last.pt` that fails to load
falls back to `previous.pt` with a warning; otherwise `CheckpointError`, one
line naming the file.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
PREVIOUS = "previous.pt"  # the last.pt before the newest one, the fallback when last.pt is damaged
NAMES = {"last": LAST, "best": BEST}
FORMAT = "trpo_lab-checkpoint-2"
TMP_SUFFIX = ".tmp"
_NDARRAY, _NPSCALAR = "__trpo_lab_ndarray__", "__trpo_lab_npscalar__"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing, damaged, not a trpo_lab checkpoint); the message names the file.
    `run_dir`: the run directory it belongs to, when it was looked up through one."""

    def __init__(self, message: str, run_dir: Path | None = None):
        super().__init__(message)
        self.run_dir = run_dir


def checkpoint_path(run_dir: Path, name: str = LAST) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / name


def has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` holds a resumable checkpoint file (last.pt, or previous.pt if a save was cut short)."""
    return checkpoint_path(run_dir, LAST).is_file() or checkpoint_path(run_dir, PREVIOUS).is_file()


def to_plain(value: Any, where: str = "checkpoint") -> Any:
    """`value` with numpy arrays and scalars replaced by plain records that weights_only loading accepts.

    Raises TypeError naming the entry for anything else that is not a tensor, a
    number, a string, bytes, None or a dict, list or tuple of those.
    """
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"{where}: a numpy array of Python objects cannot be checkpointed as data")
        return {_NDARRAY: [value.dtype.str, list(value.shape), _byte_tensor(value.tobytes())]}
    if isinstance(value, np.generic):
        return {_NPSCALAR: [value.dtype.str, _byte_tensor(np.asarray(value).tobytes())]}
    if isinstance(value, dict):
        return {k: to_plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(to_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} is a {type(value).__name__}, which a checkpoint cannot hold as data")


def _byte_tensor(raw: bytes) -> torch.Tensor:
    """`raw` as a uint8 tensor: stored verbatim (torch's pickle protocol would re-encode bytes as text)."""
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy())


def from_plain(value: Any) -> Any:
    """The inverse of `to_plain`."""
    if isinstance(value, dict):
        if len(value) == 1 and _NDARRAY in value:
            dtype, shape, raw = value[_NDARRAY]
            return np.frombuffer(raw.numpy().tobytes(), dtype=np.dtype(dtype)).reshape(shape).copy()
        if len(value) == 1 and _NPSCALAR in value:
            dtype, raw = value[_NPSCALAR]
            return np.frombuffer(raw.numpy().tobytes(), dtype=np.dtype(dtype))[0]
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_plain(v) for v in value)
    return value


def _replace_atomically(data: bytes, path: Path) -> None:
    """Write `data` to path.tmp, then rename it onto `path`; the temporary is removed if the write fails."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep the half-written file
        raise
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, state: dict[str, Any], name: str = LAST) -> Path:
    path = checkpoint_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(to_plain(state), buffer)
    payload = buffer.getvalue()
    outer = io.BytesIO()
    torch.save({"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "payload": _byte_tensor(payload)},
               outer)
    data = outer.getvalue()
    if name == LAST and path.is_file():
        os.replace(path, checkpoint_path(run_dir, PREVIOUS))  # has_checkpoint covers the moment between
    _replace_atomically(data, path)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved in checkpoint file `path`; CheckpointError (one line, naming it) if it does not load."""
    path = Path(path)
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} does not load ({_why(err)}); it is damaged, or not a "
                              f"checkpoint written by this trpo_lab") from None
    payload = outer.get("payload") if isinstance(outer, dict) else None
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or outer.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not in trpo_lab's checkpoint format ({FORMAT}); "
                              "it was written by another program or an older trpo_lab")
    payload = payload.numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is damaged: its contents do not match their SHA-256")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} does not load ({_why(err)})") from None
    return from_plain(state)


def _why(err: BaseException) -> str:
    """The first line of a load error (torch's weights_only refusals run to a page)."""
    text = str(err).strip().splitlines()
    first = text[0].split(". ")[0] if text else ""
    return f"{type(err).__name__}: {first}".rstrip(": ")[:300]


def load_checkpoint(run_dir: Path, name: str = LAST) -> dict[str, Any]:
    """The state in run_dir's checkpoint `name`. A damaged last.pt falls back to previous.pt, with a warning."""
    path = checkpoint_path(run_dir, name)
    try:
        if name == LAST and not path.is_file() and checkpoint_path(run_dir, PREVIOUS).is_file():
            raise CheckpointError(f"no checkpoint at {path}")  # killed between the two renames of a save
        return read_checkpoint(path)
    except CheckpointError as err:
        previous = checkpoint_path(run_dir, PREVIOUS)
        if name != LAST or not previous.is_file():
            raise CheckpointError(str(err), Path(run_dir)) from None
        try:
            state = read_checkpoint(previous)
        except CheckpointError as second:
            raise CheckpointError(f"{err}; the fallback {second}", Path(run_dir)) from None
        log.warning("%s; using the previous checkpoint %s (iteration %s) instead", err, previous,
                    state.get("iteration", "?"))
        return state


def remove_temporaries(run_dir: Path) -> None:
    """Delete half-written checkpoint files (a save cut short by a full disk or a kill)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if folder.is_dir():
        for tmp in folder.glob("*" + TMP_SUFFIX):
            tmp.unlink(missing_ok=True)
