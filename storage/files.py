"""The only file I/O seam of storage: every read, write, fsync, rename and delete goes through here.

`FileSystem` is the real thing (raw file descriptors, `os.write`/`os.pread`: no Python-level
buffering, so an append has reached the kernel when it returns and survives `kill -9`).

`FaultyFileSystem` is the same on real files plus a model of what is durable, for tests:

* `crash()` simulates power loss: every file goes back to its content at its last fsync (a file
  never fsynced goes back to what it held when first opened by this file system, or to empty if it
  was created), optionally keeping a random prefix of the unsynced tail of append-only files
  (a torn write). All open handles die.
* `fail_next("write"|"fsync"|"open"|"rename", err)` makes the next such call raise OSError(err)
  (ENOSPC, EIO, ...); a failed write may first write a prefix of its data (`partial=True`).

Renames and deletes are modelled as durable at once (the directory is fsynced by the callers that
need it, see `checkpoint.write_atomic`).
"""

from __future__ import annotations

import errno as _errno
import os
import random
from collections.abc import Iterable

_READ_CHUNK_MAX = 1 << 30


class File:
    """An open file: positional reads, appends at the end, truncate, fsync. Not thread-safe."""

    __slots__ = ("_fd", "_fs", "path", "size")

    def __init__(self, fs: FileSystem, path: str, fd: int) -> None:
        self._fs = fs
        self._fd = fd
        self.path = path
        self.size = os.fstat(fd).st_size

    def fileno(self) -> int:
        """The descriptor, for `os.sendfile`/`loop.sendfile` of stored bytes."""
        return self._fd

    def append(self, data: bytes | bytearray | memoryview) -> int:
        """Write `data` at the end; return the position it starts at. All bytes reach the kernel."""
        position = self.size
        self._fs._write(self, data, position)
        self.size = position + len(data)
        return position

    def append_parts(self, parts: list[bytes | bytearray | memoryview], total: int | None = None) -> int:
        """Write the concatenation of `parts` (`total` bytes, if the caller knows) at the end, with
        one pwritev and no copy; return its position."""
        position = self.size
        total = self._fs._writev(self, parts, position, total)
        self.size = position + total
        return position

    def pwrite(self, data: bytes | bytearray | memoryview, position: int) -> None:
        """Overwrite bytes at `position` (used only for in-place header stamping of indexes)."""
        self._fs._write(self, data, position)
        self.size = max(self.size, position + len(data))

    def pread(self, position: int, length: int) -> bytes:
        return self._fs._pread(self, position, length)

    def truncate(self, size: int) -> None:
        self._fs._truncate(self, size)
        self.size = size

    def fsync(self) -> None:
        self._fs._fsync(self)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._fd < 0


class FileSystem:
    """Real files. Subclassed by FaultyFileSystem; storage code takes one as a parameter."""

    def open(self, path: str, create: bool = True) -> File:
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        return File(self, path, fd)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def rmtree(self, path: str) -> None:
        for name in self.listdir(path):
            self.remove(os.path.join(path, name))
        os.rmdir(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # The primitives File calls; FaultyFileSystem overrides them.
    def _write(self, f: File, data: bytes | bytearray | memoryview, position: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(f._fd, view, position)
            view = view[written:]
            position += written

    def _writev(self, f: File, parts: list[bytes | bytearray | memoryview], position: int,
                total: int | None = None) -> int:
        if total is None:
            total = sum(len(p) for p in parts)
        written = os.pwritev(f._fd, parts, position)
        if written < total:  # rare: finish the tail with plain writes
            self._write(f, b"".join(bytes(p) for p in parts)[written:], position + written)
        return total

    def _pread(self, f: File, position: int, length: int) -> bytes:
        data = os.pread(f._fd, length, position)
        if len(data) == length or len(data) == 0:
            return data
        parts = [data]  # short read from a regular file happens only at EOF or > 2 GiB
        got = len(data)
        while got < length:
            more = os.pread(f._fd, min(length - got, _READ_CHUNK_MAX), position + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _truncate(self, f: File, size: int) -> None:
        os.ftruncate(f._fd, size)

    def _fsync(self, f: File) -> None:
        os.fsync(f._fd)


class FaultyFileSystem(FileSystem):
    """Real files plus a durability model and injectable failures (see module docstring)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self._durable: dict[str, bytes] = {}  # path -> content as of its last fsync
        self._open: list[File] = []
        self._failures: list[tuple[str, int, bool, str | None]] = []
        self.fsync_count = 0

    # --- fault control -------------------------------------------------------------------------
    def fail_next(self, op: str, err: int = _errno.EIO, partial: bool = False,
                  path_contains: str | None = None) -> None:
        """Make the next `op` ("write", "fsync", "open", "rename", "truncate") raise OSError(err)."""
        self._failures.append((op, err, partial, path_contains))

    def _maybe_fail(self, op: str, path: str) -> tuple[int, bool] | None:
        for i, (fop, err, partial, needle) in enumerate(self._failures):
            if fop == op and (needle is None or needle in path):
                del self._failures[i]
                return err, partial
        return None

    def crash(self, torn: bool = True) -> None:
        """Power loss: every file returns to its durable content (plus maybe a torn tail)."""
        for f in self._open:
            f.close()
        self._open.clear()
        for path, durable in list(self._durable.items()):
            if not os.path.exists(path):
                del self._durable[path]
                continue
            with open(path, "rb") as fh:
                current = fh.read()
            content = durable
            if torn and len(current) > len(durable) and current.startswith(durable):
                keep = self.rng.randint(0, len(current) - len(durable))
                content = current[: len(durable) + keep]
            with open(path, "wb") as fh:
                fh.write(content)
        self._failures.clear()

    # --- overrides --------------------------------------------------------------------------------
    def _track(self, path: str) -> None:
        if path not in self._durable:
            self._durable[path] = FileSystem.read_file(self, path) if os.path.exists(path) else b""

    def open(self, path: str, create: bool = True) -> File:
        failure = self._maybe_fail("open", path)
        if failure:
            raise OSError(failure[0], os.strerror(failure[0]), path)
        self._track(path)
        f = super().open(path, create)
        self._open.append(f)
        return f

    def rename(self, src: str, dst: str) -> None:
        failure = self._maybe_fail("rename", src)
        if failure:
            raise OSError(failure[0], os.strerror(failure[0]), src)
        self._track(src)
        super().rename(src, dst)
        self._durable[dst] = self._durable.pop(src)

    def remove(self, path: str) -> None:
        super().remove(path)
        self._durable.pop(path, None)

    def _write(self, f: File, data: bytes | bytearray | memoryview, position: int) -> None:
        failure = self._maybe_fail("write", f.path)
        if failure:
            err, partial = failure
            if partial and len(data) > 1:
                super()._write(f, memoryview(data)[: self.rng.randint(1, len(data) - 1)], position)
            raise OSError(err, os.strerror(err), f.path)
        super()._write(f, data, position)

    def _writev(self, f: File, parts: list[bytes | bytearray | memoryview], position: int,
                total: int | None = None) -> int:
        data = b"".join(bytes(p) for p in parts)
        self._write(f, data, position)
        return len(data)

    def _truncate(self, f: File, size: int) -> None:
        failure = self._maybe_fail("truncate", f.path)
        if failure:
            raise OSError(failure[0], os.strerror(failure[0]), f.path)
        super()._truncate(f, size)

    def _fsync(self, f: File) -> None:
        failure = self._maybe_fail("fsync", f.path)
        if failure:
            raise OSError(failure[0], os.strerror(failure[0]), f.path)
        super()._fsync(f)
        self.fsync_count += 1
        self._durable[f.path] = FileSystem.read_file(self, f.path)

    def durable_paths(self) -> Iterable[str]:
        return list(self._durable)
