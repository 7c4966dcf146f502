"""Checkpoints: make one from a model and its training state, save it atomically (a disk that fills
up keeps the previous one), load it safely (plain weights only), resume from it, and clear the
temporary files a killed save left behind."""

from __future__ import annotations

import errno
import os
import pickle
import re
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..embedder import CHECKPOINT_FORMAT
from ..registry import ARCHITECTURES
from ..system import fsync_dir
from .events import Info, TrainingError

CHECKPOINT_VERSION = 1
# save_checkpoint writes ".NAME.tmp-PID" beside NAME and renames it over NAME when it is whole.
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")
_ZIP_START = b"PK\x03\x04"  # torch.save writes a zip archive
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


class _Writes:
    """A binary file that remembers the OSError a write raised: torch.save reports a failed write
    as an opaque RuntimeError ("unexpected pos ..."), which says nothing of a full disk."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """Write *checkpoint* atomically: a temporary file in the same folder, fsync, then os.replace,
    so *path* always holds either the previous checkpoint or the new one, whole. A disk without
    room for it raises TrainingError in one line, the temporary file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_path(path)
    writes = None
    try:
        with open(tmp, "wb") as fh:
            writes = _Writes(fh)
            torch.save(checkpoint, writes)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        cause = writes.error if writes is not None and writes.error is not None else exc
        if isinstance(cause, OSError) and cause.errno in _FULL:
            kept = (f"{path} still holds the previous checkpoint" if path.exists()
                    else "no checkpoint was written")
            raise TrainingError(f"no room on the disk for the checkpoint in {path.parent} "
                                f"({os.strerror(cause.errno)}); {kept}") from cause
        if cause is not exc:
            raise cause from exc
        raise
    fsync_dir(path.parent)  # make the rename itself durable
    return path


def read_checkpoint_file(path: str | os.PathLike, *, mmap: bool = False) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU. A file refused because it holds Python
    objects besides weights is reported as such, never with torch's advice to load it unsafely."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise TrainingError(
                f"{path} was refused for safety: it is a PyTorch file that holds Python objects besides "
                "weights (a whole saved model, for example), and loading such a file can run code. simviewer "
                "loads only plain weights (a state_dict) and its own checkpoints") from None
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A simviewer checkpoint, read with ``weights_only=True``; TrainingError if it is not one."""
    try:
        ckpt = read_checkpoint_file(path)
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(f"cannot load checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a simviewer checkpoint")
    return ckpt


def base_checkpoint(path: str) -> dict | None:
    """The simviewer checkpoint a run starts from, None for any other weights file (a file that
    cannot be read at all is left for the embedder to report); TrainingError for one refused for
    safety."""
    try:
        obj = read_checkpoint_file(path)
    except TrainingError:
        raise
    except Exception:
        return None
    return obj if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT else None


def checkpoint_arch(path: str) -> str | None:
    """The architecture a simviewer checkpoint was trained on; None for any other file."""
    try:
        obj = read_checkpoint_file(path, mmap=True)
    except Exception:  # not a zip-format file (mmap), or not a checkpoint at all: resolve() says why
        return None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and obj.get("arch") in ARCHITECTURES:
        return str(obj["arch"])
    return None


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def make_checkpoint(meta: dict | None, model: nn.Module, epoch: int, metric: str, metrics: dict[str, float],
                    history: dict, optimizer: torch.optim.Optimizer, scheduler, loss_fn) -> dict:
    """A plain-dict checkpoint of *model* after *epoch*: *meta*, the weights, the metrics, the
    history and the optimizer, scheduler and loss states (what a resumed run carries on with)."""
    ckpt = dict(meta or {})
    ckpt.update({
        "model": cpu_state(model),
        "epoch": epoch,
        "metrics": {"name": metric, "best": dict(metrics), "best_epoch": epoch, "before": dict(history["before"])},
        "history": {"loss": list(history["loss"]), "lr": list(history["lr"]),
                    "epochs": [dict(e) for e in history["epochs"]], "before": dict(history["before"])},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "criterion": cpu_state(loss_fn) if isinstance(loss_fn, nn.Module) else {},
    })
    return ckpt


# -- resume -------------------------------------------------------------------------------------
@dataclass
class Resumed:
    """Where a run starts: epoch 0 with an empty history, or a resumed checkpoint's epoch and history."""

    base_weights: str  # what the run's weights came from, as reported and stored
    epoch: int = 0
    history: dict = field(default_factory=dict)
    from_epoch: int | None = None  # the resumed checkpoint's epoch; None when not resuming


def resume_problem(ckpt: dict, mode: str, freeze: bool, classes: list[str]) -> str:
    """Why *ckpt* cannot be resumed by this run ('' when it can)."""
    if "optimizer" not in ckpt or "epoch" not in ckpt:
        return "it holds no optimizer state"
    if ckpt.get("mode") != mode:
        return f"it was trained {ckpt.get('mode')}, this run is {mode}"
    if bool(ckpt.get("config", {}).get("freeze")) != freeze:
        return "it was trained with a different freeze setting"
    if mode == "supervised" and list(ckpt.get("classes", [])) != classes:
        return "its classes differ from this dataset's sub-folders"
    return ""


def resume(ckpt: dict | None, path: str | None, base_weights: str, problem: str, criterion: nn.Module,
           optimizer: torch.optim.Optimizer, scheduler) -> Generator[Info, None, Resumed]:
    """Carry on from *ckpt* (the run's starting weights, from *path*) unless *problem* says why it
    cannot be resumed: its loss, optimizer and scheduler states, epoch count and history. Yields
    what it did as :class:`Info`."""
    if ckpt is None:
        return Resumed(base_weights=base_weights)
    if problem:
        yield Info(message=f"starting from the weights of {path} without resuming: {problem}")
        return Resumed(base_weights=base_weights)
    try:
        criterion.load_state_dict(ckpt.get("criterion", {}))
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise TrainingError(f"cannot resume from {path}: {exc}") from exc
    epoch = int(ckpt["epoch"])
    old = ckpt.get("history", {})
    history = {"loss": list(old.get("loss", [])), "lr": list(old.get("lr", [])), "epochs": list(old.get("epochs", []))}
    if "before" in old:
        history["before"] = dict(old["before"])
    yield Info(message=f"resuming {path} after its epoch {epoch}: its optimizer state and learning rate "
                       f"({optimizer.param_groups[0]['lr']:.2g}) carry on")
    return Resumed(base_weights=str(ckpt.get("base_weights", base_weights)), epoch=epoch, history=history,
                   from_epoch=epoch)


# -- temporary files of killed saves ------------------------------------------------------------
def process_started() -> float:
    """When this process started (seconds since the epoch); this module's import time where the
    system does not say."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or a number the system cannot check: leave its file
    return True


def _is_stale_temporary(entry: os.DirEntry, started: float) -> bool:
    """A temporary checkpoint of simviewer's naming, a plain file (empty or a zip archive's start),
    last written before this process started, by a process that is gone."""
    match = TEMPORARY_NAME.match(entry.name)
    if match is None or not entry.is_file(follow_symlinks=False):
        return False
    st = entry.stat(follow_symlinks=False)
    if st.st_mtime >= started or int(match["pid"]) == os.getpid() or _alive(int(match["pid"])):
        return False
    with open(entry.path, "rb") as fh:
        start = fh.read(len(_ZIP_START))
    return start in (b"", _ZIP_START)


def clean_stale_temporaries(folder: str | os.PathLike) -> tuple[int, int]:
    """Remove the temporary files killed checkpoint saves left in *folder*; ``(files, bytes)``
    removed. Only files of :data:`TEMPORARY_NAME`, older than this process, are touched."""
    removed = size = 0
    started = process_started()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0, 0  # no folder yet: nothing left behind
    for entry in entries:
        try:
            if _is_stale_temporary(entry, started):
                n = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
                removed, size = removed + 1, size + n
        except OSError:
            continue  # vanished or not ours to remove: leave it
    return removed, size


def checkpoint_meta(*, arch: str, dim: int, mode: str, classes: list[str], base_weights: str,
                    resumed_from: str | None, model: nn.Module, pooling: str, preprocess: dict,
                    config: dict) -> dict:
    """What a checkpoint says of itself besides its tensors: enough for ``Embedder(arch, weights=PATH)``
    to rebuild the network and its preprocessing, and for a later run to resume it."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "dim": dim,
        "mode": mode,
        "classes": classes,
        "base_weights": base_weights,
        "resumed_from": resumed_from,
        "transform_input": bool(getattr(model, "transform_input", False)),
        "pooling": pooling,
        "preprocess": preprocess,
        "config": config,
    }
