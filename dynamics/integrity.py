"""Files written whole, with the user's file mode, and read back only if unchanged.

* ``atomic_write(path, write)``: ``write(tmp)`` fills a fresh temporary file next to
  ``path``; the file is flushed to disk and renamed onto ``path`` (``os.replace`` is atomic
  on POSIX), so a reader never sees a half-written file and a process killed at any moment
  (SIGKILL included) leaves the old file or the new one. The temporary file is created with
  mode ``0o666`` filtered by the umask, exactly as ``open(path, "w")`` would create
  ``path`` (0644 under umask 022; ``tempfile.mkstemp`` would give 0600). An ``OSError``
  names ``path``, not the temporary file.
* Seals: a sealed file ends with ``SEAL_PREFIX`` and the 64 hexadecimal digits of the
  SHA-256 of the whole file in which those digits read ``"0" * 64`` (``SEAL_PLACEHOLDER``
  is what the writer puts there). ``check_seal`` verifies the file before anything parses
  it, because a parser handed a damaged file may do anything: one flipped byte in the
  metadata of a 10 kB netCDF-4 file sent the HDF5 library into an endless loop. The seal
  sits where the format allows trailing bytes: after the end of an HDF5 file (readers
  ignore bytes past its end-of-file address) and in the archive comment of a zip (``.npz``).
* ``digest(*arrays)``: SHA-256 of arrays' dtypes, shapes and bytes; arrays of text
  (numpy ``U``/``S`` strings, objects, and numpy 2's ``StringDType``, which pandas 3 gives
  for string labels) are hashed as their shape and the text of each element, since their
  buffers hold pointers, not contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import secrets
from typing import Callable

import numpy as np

SEAL_PREFIX = b"traindyn-sha256:"
_ZEROS = b"0" * 64
SEAL_PLACEHOLDER = SEAL_PREFIX + _ZEROS
_BLOCK = 1 << 20

# What check_seal finds.
SEALED, UNSEALED, DAMAGED = "sealed", "unsealed", "damaged"


def is_text(dtype) -> bool:
    """Whether arrays of ``dtype`` hold text or Python objects rather than numbers:
    numpy ``U`` and ``S`` strings, objects, and numpy 2's variable-width ``StringDType``
    (kind ``T``)."""
    return np.dtype(dtype).kind in "USOT"


def text_json(a) -> str:
    """The shape of ``a`` and the text of each element, in JSON (the same for every width
    of string dtype and for ``StringDType``)."""
    a = np.asarray(a)
    return json.dumps([list(a.shape), [str(v) for v in a.ravel().tolist()]])


def digest(*arrays) -> str:
    """SHA-256 of arrays' dtypes, shapes and bytes (``None`` hashes as a marker; text
    arrays as their shape and elements' text, see ``text_json``)."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.asarray(a)
        if is_text(a.dtype):
            h.update(b"text" + text_json(a).encode())
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.reshape(-1).view(np.uint8))  # the bytes, without a copy
    return h.hexdigest()


def _sealed_sha256(f, size: int) -> str:
    """SHA-256 of the open file ``f`` of ``size`` bytes with its last 64 bytes as zeros."""
    h = hashlib.sha256()
    f.seek(0)
    left = size - len(_ZEROS)
    while left > 0:
        block = f.read(min(_BLOCK, left))
        if not block:
            break
        h.update(block)
        left -= len(block)
    h.update(_ZEROS)
    return h.hexdigest()


def _seal(path: pathlib.Path) -> None:
    """Write the SHA-256 over the placeholder with which the file at ``path`` ends."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - len(SEAL_PLACEHOLDER), 0))
        if size < len(SEAL_PLACEHOLDER) or f.read() != SEAL_PLACEHOLDER:
            raise RuntimeError(f"a sealed file must end with SEAL_PLACEHOLDER: {path}")
        checksum = _sealed_sha256(f, size)
        f.seek(size - len(_ZEROS))
        f.write(checksum.encode())


def check_seal(path) -> str:
    """``SEALED`` (the file ends with a seal that matches its bytes), ``UNSEALED`` (no seal
    at its end) or ``DAMAGED`` (a seal that does not match)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < len(SEAL_PLACEHOLDER):
            return UNSEALED
        f.seek(size - len(SEAL_PLACEHOLDER))
        tail = f.read()
        if not tail.startswith(SEAL_PREFIX):
            return UNSEALED
        stored = tail[len(SEAL_PREFIX):]
        return SEALED if stored == _sealed_sha256(f, size).encode() else DAMAGED


def _fsync(path, flags=os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[pathlib.Path], None], *, sealed: bool = False) -> None:
    """Replace ``path`` atomically by the file that ``write(tmp)`` writes at ``tmp`` (see
    the module doc); with ``sealed``, the written file must end with ``SEAL_PLACEHOLDER``,
    which is replaced by its checksum."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            write(tmp)
            if sealed:
                _seal(tmp)
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync(path.parent)
        except OSError as err:
            if err.errno is None:
                raise
            raise type(err)(err.errno, err.strerror, str(path)) from err
    finally:
        if tmp.exists():
            tmp.unlink()
