"""Checkpoints of a sweep: the carry and the trajectory so far, written atomically.

A checkpoint directory holds

* ``sweep.json``: the fingerprint of the sweep (configuration, task data, seeds, swept
  values, precision) and its layout (runs per chunk, log points per chunk). A sweep called
  with a directory whose fingerprint differs is refused with a ``ValueError``; it is never
  silently reused.
* per part (one per combination of static-axis values) ``part-<i>/runs-<c>.npz``: the
  finished run-chunk ``c`` (final state and whole trajectory), and ``part-<i>/current.npz``:
  the run-chunk in progress (its state after the last complete chunk of log points, and its
  trajectory up to there).

Every file is written to a temporary name in the same directory, flushed to disk and
renamed into place (``os.replace`` is atomic on POSIX), so a sweep killed at any moment
(SIGKILL included) leaves only complete files. Arrays are stored raw (``numpy.savez``, no
pickle), so a resumed sweep continues from bitwise the same carry.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile

import numpy as np

FORMAT = 1


def _atomic_write(path: pathlib.Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def digest(*arrays) -> str:
    """SHA-256 of arrays' dtypes, shapes and bytes (identifies a task's data)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class SweepCheckpoint:
    """The checkpoint directory of one sweep (see the module doc)."""

    def __init__(self, directory, fingerprint: dict):
        self.dir = pathlib.Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))

    def open(self, layout: dict) -> dict:
        """Check or create ``sweep.json``; returns the layout to use (the stored one when
        resuming, so that a resumed sweep cuts its chunks exactly as before)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "sweep.json"
        if manifest.exists():
            stored = json.loads(manifest.read_text())
            if stored.get("format") != FORMAT or stored.get("fingerprint") != self.fingerprint:
                diff = sorted(
                    k for k in set(self.fingerprint) | set(stored.get("fingerprint", {}))
                    if self.fingerprint.get(k) != stored.get("fingerprint", {}).get(k)
                )
                raise ValueError(
                    f"checkpoint_dir {str(self.dir)!r} holds a checkpoint of a different sweep "
                    f"(differs in: {', '.join(diff) or 'format'}); use another directory or "
                    "delete it to start afresh"
                )
            return stored["layout"]
        text = json.dumps({"format": FORMAT, "fingerprint": self.fingerprint, "layout": layout},
                          indent=1, sort_keys=True)
        _atomic_write(manifest, lambda f: f.write(text.encode()))
        return layout

    def _part(self, part: int) -> pathlib.Path:
        path = self.dir / f"part-{part}"
        path.mkdir(exist_ok=True)
        return path

    @staticmethod
    def _save(path: pathlib.Path, arrays: dict) -> None:
        _atomic_write(path, lambda f: np.savez(f, **arrays))

    @staticmethod
    def _load(path: pathlib.Path) -> dict | None:
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save_done(self, part: int, chunk: int, arrays: dict) -> None:
        self._save(self._part(part) / f"runs-{chunk}.npz", arrays)
        current = self._part(part) / "current.npz"
        if current.exists():
            current.unlink()

    def load_done(self, part: int, chunk: int) -> dict | None:
        return self._load(self._part(part) / f"runs-{chunk}.npz")

    def save_current(self, part: int, chunk: int, logs_done: int, arrays: dict) -> None:
        meta = {"__chunk": np.asarray(chunk), "__logs_done": np.asarray(logs_done)}
        self._save(self._part(part) / "current.npz", {**arrays, **meta})

    def load_current(self, part: int, chunk: int) -> tuple[int, dict] | None:
        """``(log points done, arrays)`` of run-chunk ``chunk`` in progress, if any."""
        arrays = self._load(self._part(part) / "current.npz")
        if arrays is None or int(arrays.pop("__chunk")) != chunk:
            return None
        return int(arrays.pop("__logs_done")), arrays
