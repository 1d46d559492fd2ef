"""Checkpoints: ``last.pt`` after every epoch, ``best.pt`` when the monitored metric improves,
written by :class:`CheckpointWriter` while the next epoch trains.

A checkpoint holds the config next to the weights, so it says what it is, and
everything a run needs to continue where it stopped:

- ``epoch``, ``metrics`` (that epoch's), ``history`` (every epoch so far), ``classes``;
- ``config`` (the resolved config as plain data) and ``run_id`` (who wrote it, or None):
  a checkpoint resumes only a run with the same config;
- ``model_state``, ``optimizer_state``, ``scheduler_state`` and ``scaler_state``
  (None without a scheduler or a GradScaler);
- ``rng_state``: Python, NumPy, torch CPU and CUDA, and the training batches' generator.

Every value is plain data or a tensor, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import io
import random
import sys
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kubetune.errors import KubetuneError
from kubetune.fileio import write_bytes_atomic


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Every random number generator a training epoch draws from."""
    state = np.random.get_state()
    assert isinstance(state, tuple)  # legacy=True, the default: a tuple, not a dict
    name, key, pos, has_gauss, gauss = state
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batches": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None) -> None:
    """Put back what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state["batches"] is not None:
        generator.set_state(state["batches"])


def checkpoint_payload(model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                       metrics: dict[str, float], config: dict[str, Any], classes: list[str], *,
                       history: list[dict[str, float]] | None = None,
                       scheduler: Any = None, scaler: torch.amp.GradScaler | None = None,
                       generator: torch.Generator | None = None,
                       run_id: str | None = None) -> dict[str, Any]:
    """What a checkpoint stores; ``config`` is the resolved config as plain data."""
    return {
        "epoch": epoch,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "rng_state": rng_state(generator),
        "metrics": metrics,
        "history": list(history or []),
        "config": config,
        "run_id": run_id,
        "classes": classes,
    }


def serialise(payload: dict[str, Any]) -> bytes:
    """A checkpoint's bytes; copies the tensors, so training may change them afterwards."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_checkpoints(run_dir: Path, data: bytes, *, best: bool) -> None:
    """Write ``best.pt`` (when ``best``), then ``last.pt``, each through an fsync'd rename.

    ``last.pt`` is the commit point: a resumed run believes its history about which
    epoch is best, so ``best.pt`` must hold that epoch before ``last.pt`` says so. A
    kill between the two leaves ``best.pt`` one epoch ahead of ``last.pt``: an epoch the
    resumed run trains again.
    """
    if best:
        write_bytes_atomic(run_dir / "best.pt", data)
    write_bytes_atomic(run_dir / "last.pt", data)


class CheckpointWriter:
    """Writes each epoch's checkpoints on a background thread while the next epoch trains.

    The fsync'd writes are most of a small model's checkpoint cost, and they wait on
    the disk, not the CPU. :meth:`save` waits for the previous epoch's writes (so files
    land in epoch order and one epoch's bytes at most are held) and raises their
    error, then serialises on the caller's thread and queues the writes. Leaving the
    ``with`` block waits for the last writes; if the block is already failing (an
    error, a SIGTERM), a write error is printed rather than raised, so the first cause
    is the one reported.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubetune-checkpoint")
        self._pending: Future[None] | None = None

    def save(self, payload: dict[str, Any], *, best: bool) -> None:
        """Queue ``payload`` as ``last.pt`` (and ``best.pt`` when ``best``)."""
        self.wait()
        data = serialise(payload)
        self._pending = self._executor.submit(write_checkpoints, self.run_dir, data, best=best)

    def wait(self) -> None:
        """Block until the queued writes are on disk; raise their error."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        finally:
            if pending.done():  # an interrupt while waiting leaves it for __exit__
                self._pending = None

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        try:
            self.wait()
        except Exception as error:
            if exc is None:
                raise
            print(f"warning: the last checkpoint in {self.run_dir} was not written: {error}",
                  file=sys.stderr)
        finally:
            self._executor.shutdown(wait=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint, read onto the CPU with ``weights_only=True`` (KubetuneError if unreadable)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise KubetuneError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None


def resumable(path: Path, config: dict[str, Any], run_id: str | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it continues a run of ``config`` (and ``run_id``), else None."""
    if not path.is_file():
        return None
    try:
        checkpoint = load_checkpoint(path)
    except KubetuneError:
        return None
    if checkpoint.get("config") != config or "rng_state" not in checkpoint:
        return None
    if run_id is not None and checkpoint.get("run_id") != run_id:
        return None
    return checkpoint


def restore(checkpoint: Mapping[str, Any], config: dict[str, Any], model: torch.nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler | None,
            generator: torch.Generator | None) -> list[dict[str, float]]:
    """Load a checkpoint's state into a freshly built run of ``config``; return its history."""
    if checkpoint.get("config") != config or "rng_state" not in checkpoint:
        raise KubetuneError(f"the checkpoint of epoch {checkpoint.get('epoch')} is not of this run "
                            "(its config differs); start without it")
    model.load_state_dict(checkpoint["model_state"])
    optimizer.load_state_dict(checkpoint["optimizer_state"])
    if scheduler is not None and checkpoint["scheduler_state"] is not None:
        scheduler.load_state_dict(checkpoint["scheduler_state"])
    if scaler is not None and checkpoint["scaler_state"] is not None:
        scaler.load_state_dict(checkpoint["scaler_state"])
    set_rng_state(checkpoint["rng_state"], generator)
    return list(checkpoint["history"])
