"""The content-addressed image store: ``images/<sha256[:2]>/<sha256>.<ext>`` and its rows.

Files go on disk before any row can point at them, and are unlinked only after the transaction
that dropped their rows has committed: a crash leaves at worst an orphaned file, which
`ImageStore.sweep_orphans` removes at the next open, never a row pointing at a missing file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from model.files import write_atomically
from model.imagetypes import image_extension

logger = logging.getLogger(__name__)

# Files in the image store that no row references are removed at open only once they are this
# old, so that a file another process has just written but not yet linked is never swept away.
ORPHAN_GRACE_S = 3600.0
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ImageStore:
    """The image files under `root` and the `images` table, over the store's connection."""

    def __init__(self, conn: sqlite3.Connection, root: Path) -> None:
        self._conn = conn
        self._root = root

    @property
    def root(self) -> Path:
        """The folder holding the image files."""
        return self._root

    def path(self, sha256: str, ext: str) -> Path:
        """Where the image with this hash and extension is stored."""
        return self._root / sha256[:2] / f"{sha256}.{ext}"

    def path_in_row(self, row: sqlite3.Row, sha256: str | None) -> Path | None:
        """Where the image of a row that selected ``i.ext AS image_ext`` is, if it has one."""
        ext = row["image_ext"]
        return None if sha256 is None or ext is None else self.path(sha256, str(ext))

    def path_of_prediction(self, prediction_id: str) -> Path | None:
        """Where the image linked to a prediction is stored (None: none is linked)."""
        row = self._conn.execute(
            "SELECT i.sha256, i.ext FROM predictions p JOIN images i ON i.sha256 = p.image_sha256"
            " WHERE p.id = ?",
            (prediction_id,),
        ).fetchone()
        return None if row is None else self.path(str(row[0]), str(row[1]))

    def store(self, data: bytes, now: float) -> str:
        """Write `data` to the store and register it; returns its sha256.

        Call inside a write transaction: the file is on disk before any row can point at it.
        """
        sha = hashlib.sha256(data).hexdigest()
        ext = image_extension(data)
        path = self.path(sha, ext)
        if path.is_file():
            # Refresh its age so the orphan sweep of another process cannot race this link.
            os.utime(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A crash leaves either no file or the whole file, never half of one.
            write_atomically(path, data)
        self._conn.execute(
            "INSERT INTO images (sha256, ext, size, created) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (sha256) DO NOTHING",
            (sha, ext, len(data), now),
        )
        return sha

    def drop_unreferenced(self, candidates: Iterable[str]) -> list[Path]:
        """Delete the image rows no prediction references; returns their files to `unlink`.

        Call inside the write transaction that removed the references.
        """
        removed = []
        for sha in candidates:
            row = self._conn.execute(
                "SELECT ext FROM images i WHERE sha256 = ? AND NOT EXISTS"
                " (SELECT 1 FROM predictions p WHERE p.image_sha256 = i.sha256)",
                (sha,),
            ).fetchone()
            if row is not None:
                self._conn.execute("DELETE FROM images WHERE sha256 = ?", (sha,))
                removed.append(self.path(sha, str(row[0])))
        return removed

    @staticmethod
    def unlink(paths: Iterable[Path]) -> None:
        """Delete files `drop_unreferenced` returned; call after the commit."""
        # A crash in between leaves an orphan file, which the sweep at the next open removes,
        # never a row pointing at a deleted file.
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                logger.warning("Could not delete image %r", str(path), exc_info=True)

    def sweep_orphans(self, grace_s: float = ORPHAN_GRACE_S) -> int:
        """Delete store files no row references (left by a crash); returns how many."""
        known = {
            (str(sha), str(ext))
            for sha, ext in self._conn.execute("SELECT sha256, ext FROM images").fetchall()
        }
        # File ages are wall-clock times whatever the store's clock says.
        cutoff = time.time() - grace_s
        removed = 0
        for folder in self._root.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                name = path.name
                sha, _, ext = name.partition(".")
                ours = (name.startswith(".") and name.endswith(".tmp")) or (
                    _SHA256.fullmatch(sha) is not None and (sha, ext) not in known
                )
                try:
                    if ours and path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError:
                    logger.warning("Could not sweep %r", str(path), exc_info=True)
        if removed:
            logger.info("Removed %r orphaned files from the image store", removed)
        return removed
