"""Checkpoints of a sweep: the carry and the trajectory so far, written atomically.

A checkpoint directory holds

* ``sweep.json``: the fingerprint of the sweep (configuration, task data, seeds, swept
  values, precision), its layout (runs per chunk, log points per chunk) and their SHA-256.
  A sweep called with a directory whose fingerprint differs is refused with a
  ``ValueError``; it is never silently reused.
* per part (one per combination of static-axis values) ``part-<i>/runs-<c>.npz``: the
  finished run-chunk ``c`` (final state and whole trajectory), and ``part-<i>/current.npz``:
  the run-chunk in progress (its state after the last complete chunk of log points, and its
  trajectory up to there).

Every part file is an ``.npz`` of raw arrays (no pickle; ``numpy.load`` reads it) that
carries where it belongs: ``__sweep``, the sweep's identity (the SHA-256 of its
fingerprint and layout), and ``__part``, ``__chunk`` (and ``__logs_done`` for the chunk in
progress). It is sealed (``dynamics.integrity``: its SHA-256 in the zip's archive
comment), and the seal is checked before the file is parsed. So a part of another sweep is
refused even when ``sweep.json`` was deleted or replaced (a new ``sweep.json`` is written
only after every part in the directory was found to belong to the sweep), and a damaged
part is refused with a ``ValueError`` that names the directory and the file and says what
to do, never read into a resumed sweep.

Every file is written to a temporary name in the same directory, flushed to disk and
renamed into place (``dynamics.integrity.atomic_write``), so a sweep killed at any moment
(SIGKILL included) leaves only complete files, with the mode the user's umask gives a new
file. Arrays are stored raw, so a resumed sweep continues from bitwise the same carry.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import zipfile

import numpy as np

from dynamics import integrity
from dynamics.integrity import digest  # noqa: F401  (the task-data digest of a fingerprint)

FORMAT = 2
_META = ("__sweep", "__part", "__chunk", "__logs_done")
_PART_FILE = re.compile(r"part-(\d+)/(?:runs-(\d+)|current)\.npz")


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _npz_writer(arrays: dict):
    """``write(tmp)`` for ``integrity.atomic_write``: the arrays as ``numpy.savez`` writes
    them, with the seal's placeholder as the zip's archive comment."""

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            zf.comment = integrity.SEAL_PLACEHOLDER

    return write


class SweepCheckpoint:
    """The checkpoint directory of one sweep (see the module doc)."""

    def __init__(self, directory, fingerprint: dict):
        self.dir = pathlib.Path(directory)
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self.sweep_id: str | None = None

    def _where(self) -> str:
        return f"checkpoint_dir {str(self.dir)!r}"

    def stored_layout(self) -> dict | None:
        """The layout of the checkpoint already in the directory (checked), or None: a
        resumed sweep cuts its chunks exactly as before, without planning them again."""
        self._check_directory()
        manifest = self.dir / "sweep.json"
        return self._read_manifest(manifest) if manifest.exists() else None

    def _check_directory(self) -> None:
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"checkpoint_dir must be a directory, got the file "
                             f"{str(self.dir)!r}; give a new or existing directory")

    def open(self, layout: dict) -> dict:
        """Check or create ``sweep.json``; returns the layout to use (the stored one when
        resuming, so that a resumed sweep cuts its chunks exactly as before)."""
        self._check_directory()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ValueError(f"checkpoint_dir must be a directory, got {str(self.dir)!r}, "
                             "a path through a file") from None
        manifest = self.dir / "sweep.json"
        if manifest.exists():
            layout = self._read_manifest(manifest)
            self.sweep_id = _sha256_json({"fingerprint": self.fingerprint, "layout": layout})
            return layout
        self.sweep_id = _sha256_json({"fingerprint": self.fingerprint, "layout": layout})
        for path in sorted(self.dir.glob("part-*/*.npz")):  # before sweep.json is written
            place = _PART_FILE.fullmatch(path.relative_to(self.dir).as_posix())
            if place is not None:
                chunk = None if place.group(2) is None else int(place.group(2))
                self._read(path, part=int(place.group(1)), chunk=chunk, arrays=False)
        record = {"format": FORMAT, "fingerprint": self.fingerprint, "layout": layout}
        text = json.dumps({**record, "sha256": _sha256_json(record)}, indent=1, sort_keys=True)
        integrity.atomic_write(manifest, lambda tmp: tmp.write_text(text))
        return layout

    def _read_manifest(self, manifest: pathlib.Path) -> dict:
        """The stored layout, after checking the manifest's checksum, format and
        fingerprint."""
        try:
            stored = json.loads(manifest.read_text())
        except (ValueError, UnicodeDecodeError):
            stored = None
        if isinstance(stored, dict) and "format" in stored and stored["format"] != FORMAT:
            raise ValueError(
                f"{self._where()} holds a checkpoint in format {stored['format']!r} of "
                f"another version of traindyn (this one reads format {FORMAT}); use another "
                "directory or delete it to start afresh")
        try:
            record = {k: stored[k] for k in ("format", "fingerprint", "layout")}
            intact = stored["sha256"] == _sha256_json(record)
        except (KeyError, TypeError):
            intact = False
        if not intact:
            raise ValueError(
                f"{self._where()}: sweep.json is damaged (unreadable, or its SHA-256 does "
                "not match its contents); delete sweep.json and call the sweep again (the "
                "parts carry their own fingerprints: those of this sweep are resumed, others "
                "refused), or delete the directory to start afresh")
        if record["fingerprint"] != self.fingerprint:
            stored_fp = record["fingerprint"]
            diff = sorted(k for k in set(self.fingerprint) | set(stored_fp)
                          if self.fingerprint.get(k) != stored_fp.get(k))
            raise ValueError(
                f"{self._where()} holds a checkpoint of a different sweep (differs in: "
                f"{', '.join(diff)}); use another directory or delete it to start afresh")
        return record["layout"]

    def _read(self, path: pathlib.Path, *, part: int, chunk: int | None,
              arrays: bool = True) -> tuple[dict, dict] | None:
        """``(metadata, arrays)`` of the part file at ``path`` (``None`` if there is none),
        after checking its seal, its sweep and its place (``part``, and ``chunk`` unless
        ``None``)."""
        if not path.exists():
            return None
        name = path.relative_to(self.dir).as_posix()

        def damaged(what: str) -> ValueError:
            return ValueError(
                f"{self._where()}: {name} is damaged ({what}); delete that file and call "
                "the sweep again to recompute the runs it held, or delete the directory to "
                "start afresh")

        seal = integrity.check_seal(path)
        if seal != integrity.SEALED:
            raise damaged("its bytes do not match its SHA-256" if seal == integrity.DAMAGED
                          else "it carries no checksum: it is truncated or was not written "
                               "by this version of traindyn")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = {k: z[k].item() for k in _META if k in z.files}
                data = {k: z[k] for k in z.files if k not in _META} if arrays else {}
        except Exception as err:  # whatever numpy and zipfile raise on bad bytes
            raise damaged(f"unreadable: {type(err).__name__}: {err}") from err
        if meta.get("__sweep") != self.sweep_id:
            raise ValueError(
                f"{self._where()}: {name} belongs to a different sweep (another "
                "configuration, task, axes or layout; was sweep.json deleted or replaced?); "
                "use another directory for this sweep, or delete this one to start afresh")
        if meta.get("__part") != part or (chunk is not None and meta.get("__chunk") != chunk):
            raise damaged(f"it holds part {meta.get('__part')}, run-chunk "
                          f"{meta.get('__chunk')}, but lies at {name}: was it moved or "
                          "renamed?")
        return meta, data

    def _part(self, part: int) -> pathlib.Path:
        path = self.dir / f"part-{part}"
        path.mkdir(exist_ok=True)
        return path

    def _save(self, path: pathlib.Path, part: int, chunk: int, arrays: dict, **meta) -> None:
        meta = {"__sweep": self.sweep_id, "__part": part, "__chunk": chunk, **meta}
        arrays = {**arrays, **{k: np.asarray(v) for k, v in meta.items()}}
        integrity.atomic_write(path, _npz_writer(arrays), sealed=True)

    def save_done(self, part: int, chunk: int, arrays: dict) -> None:
        self._save(self._part(part) / f"runs-{chunk}.npz", part, chunk, arrays)
        current = self._part(part) / "current.npz"
        if current.exists():
            current.unlink()

    def load_done(self, part: int, chunk: int) -> dict | None:
        found = self._read(self._part(part) / f"runs-{chunk}.npz", part=part, chunk=chunk)
        return None if found is None else found[1]

    def save_current(self, part: int, chunk: int, logs_done: int, arrays: dict) -> None:
        self._save(self._part(part) / "current.npz", part, chunk, arrays,
                   __logs_done=logs_done)

    def load_current(self, part: int, chunk: int) -> tuple[int, dict] | None:
        """``(log points done, arrays)`` of run-chunk ``chunk`` in progress, if any."""
        found = self._read(self._part(part) / "current.npz", part=part, chunk=None)
        if found is None or found[0].get("__chunk") != chunk:
            return None
        meta, arrays = found
        return int(meta["__logs_done"]), arrays
