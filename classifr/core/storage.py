"""Durable writes and what a failed write means to a user (docs/storage.md).

* `append_whole` appends a record whole or not at all: every byte written (a short write is
  continued), fsynced, and on any failure the file is cut back to its size before the append.
* `write_file_atomically` writes a file under a temporary name, fsyncs it and renames it into place;
  the temporary file is removed on any failure.
* `StorageError` turns an OSError (or SQLite's "disk full") into one line a user understands:
  "disk full: this photo was not stored".
* `StorageState` remembers, for one part of the project, whether storing is paused (the last write
  failed for lack of space, permission or an I/O error) and why; a later successful write, or free
  space coming back, resumes it.

A caller only believes a record is stored (updates an index, answers "added") after these
functions returned.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

from classifr.core.errors import ClassifrError

logger = logging.getLogger(__name__)

# What each errno means to a user; these pause storing (another write would fail the same way).
_KINDS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk full",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "permission denied",
    errno.EFBIG: "file size limit reached",
    errno.EIO: "I/O error",
}
_SQLITE_KINDS = {
    sqlite3.SQLITE_FULL: ("disk full", errno.ENOSPC),
    sqlite3.SQLITE_IOERR: ("I/O error", errno.EIO),
    sqlite3.SQLITE_READONLY: ("permission denied", errno.EACCES),
    sqlite3.SQLITE_PERM: ("permission denied", errno.EACCES),
    sqlite3.SQLITE_CANTOPEN: ("cannot open a file", errno.EACCES),
}
# Free space that must come back, beyond what was free when a write failed, before storing is
# believed possible again without a successful write (at most 1% of a small file system).
RESUME_FREE_BYTES = 1 << 20


class StorageError(ClassifrError, OSError):
    """A record could not be stored; `str(err)` is one line such as "disk full: this photo was not stored".

    `kind` ("disk full", "permission denied", ...) and `errno` say why; `pauses` is True when later
    writes would fail the same way (storing is paused until one succeeds)."""

    def __init__(self, message: str, *, kind: str, code: int | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.errno = code

    @property
    def pauses(self) -> bool:
        return self.errno in _KINDS

    def __str__(self) -> str:
        return str(self.args[0])


def storage_error(err: BaseException, what: str) -> StorageError | None:
    """`err` as a StorageError about `what` ("this photo"); None when it is no storage failure
    (an OSError of any kind is one; of SQLite's errors, only full, I/O, read-only and cannot-open)."""
    if isinstance(err, StorageError):
        return err
    if isinstance(err, OSError):
        code = err.errno
        kind = _KINDS.get(code)
        if kind is None:
            return StorageError(f"could not store {what}: {err.strerror or err}", kind="write failed", code=code)
        disk_wide = code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
        file = f" ({Path(err.filename).name})" if err.filename and not disk_wide else ""
        return StorageError(f"{kind}: {what} was not stored{file}", kind=kind, code=code)
    if isinstance(err, sqlite3.Error):
        primary = getattr(err, "sqlite_errorcode", -1) & 0xFF
        if primary not in _SQLITE_KINDS:
            return None
        kind, code = _SQLITE_KINDS[primary]
        return StorageError(f"{kind}: {what} was not stored", kind=kind, code=code)
    return None


def append_whole(path: Path, payload: bytes, *, what: str, durable: bool = True) -> int:
    """Append `payload` to `path` (created if missing) whole, fsynced; the file's new size.

    On any failure the file is cut back to its size before the append, so no partial record stays
    behind, and StorageError is raised (naming `what`). `durable=False` skips the fsync, for
    throwaway files (a training run's progress) that only need whole lines."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as err:
        raise storage_error(err, what) from err
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, payload)
            if durable:
                os.fsync(fd)
        except BaseException as err:
            _cut_back(fd, start, path)
            if isinstance(err, OSError):
                raise storage_error(err, what) from err
            raise
        return start + len(payload)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes, tmp_dir: Path, *, what: str) -> None:
    """Write `path` whole or not at all: a temporary file in `tmp_dir` (on the same file system),
    fsynced, renamed into place, its folder fsynced. The temporary file never stays behind."""
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=tmp_dir, prefix=f"{path.name}.", suffix=".tmp")
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        temporary = None
        fsync_dir(path.parent)
    except OSError as err:
        raise storage_error(err, what) from err
    finally:
        if temporary is not None:
            _remove(Path(temporary))


def fsync_path(path: Path) -> None:
    """Make a file's bytes durable; for a folder, the renames and new entries in it (POSIX:
    folders open read-only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    fsync_path(folder)


def disk_free(path: Path) -> int:
    """Free bytes on the file system holding `path` (its nearest existing parent); -1 when unknown."""
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return -1


def _existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (a folder not created yet)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class StorageState:
    """Whether storing into `folder` is paused for `part` ("the project dataset"), and why.

    Thread-safe. `failed` pauses on a StorageError that would repeat (disk full, permission,
    I/O, size limit) and says whether this started a pause, so a caller logs it once; `succeeded`
    resumes. While paused by a full disk, `problem()` also resumes once RESUME_FREE_BYTES (at most
    1% of the file system) more are free than when the write failed (a cheap statvfs)."""

    def __init__(self, folder: Path, part: str) -> None:
        self.folder = Path(folder)
        self.part = part
        self._lock = threading.Lock()
        self._error: StorageError | None = None
        self._free_at_failure = -1

    def failed(self, error: StorageError) -> bool:
        """Record a failed write; True when storing was not paused before (log it then, once)."""
        if not error.pauses:
            return False
        free = disk_free(self.folder)
        with self._lock:
            started = self._error is None
            self._error, self._free_at_failure = error, free
        if started:  # INFO: the app logs it, the CLI's own error line says it already
            logger.info("storing paused for %s: %s", self.part, error)
        return started

    def succeeded(self) -> None:
        """Record a successful write: storing works (again)."""
        with self._lock:
            was, self._error = self._error, None
        if was is not None:
            logger.info("storing resumed for %s", self.part)

    def problem(self) -> str | None:
        """Why storing is paused ("disk full: the project dataset cannot be written"), or None."""
        with self._lock:
            error, free_then = self._error, self._free_at_failure
        if error is None:
            return None
        if error.kind == "disk full" and free_then >= 0 and disk_free(self.folder) >= free_then + self._resume_margin():
            self.succeeded()  # space is back: the next write will tell if it really is
            return None
        return f"{error.kind}: {self.part} cannot be written"

    @property
    def paused(self) -> bool:
        return self.problem() is not None

    def _resume_margin(self) -> int:
        try:
            return min(RESUME_FREE_BYTES, shutil.disk_usage(_existing(self.folder)).total // 100)
        except OSError:
            return RESUME_FREE_BYTES


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: a short count (a size limit, a nearly full disk) is
    continued, so the next call raises the real error instead of leaving half a record."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _cut_back(fd: int, size: int, path: Path) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        # The owner's reader ignores bytes after the last newline, and its next append cuts them.
        logger.error("could not cut %s back to %d bytes after a failed append", path, size)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        logger.error("could not remove the temporary file %s", path)
