"""File helpers shared by model/: durable writes (feedback store, registry) and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

CHUNK_BYTES = 1 << 20


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the file system allows."""
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def write_atomically(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data`: a reader or a crash sees the old or the new file, never half.

    The temporary file is `.<name>.*.tmp` beside `path`; `mode` (default: mkstemp's private
    0600) is set before any byte is written.
    """
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    """The sha256 of the file's content, hex; read in chunks, so any size fits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
