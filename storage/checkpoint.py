"""Small state files written atomically, in Kafka's checkpoint text format.

Format (as Kafka's CheckpointFile)::

    0                 <- version
    N                 <- number of entries
    <field> <field>   <- N lines, space separated

Writes go to `<path>.tmp`, are fsynced, renamed over `<path>`, and the directory is fsynced, so a
crash at any byte leaves either the old or the new file. A file that does not parse (wrong
version, wrong count, bad number) raises `CheckpointError`; callers treat it as missing and
rebuild what it held, never trust it.
"""

from __future__ import annotations

import os

from storage.files import FileSystem

CHECKPOINT_VERSION = 0
CHECKPOINT_ENTRIES_MAX = 1_000_000


class CheckpointError(ValueError):
    """A checkpoint file exists but is not well formed."""


def write_atomic(fs: FileSystem, path: str, data: bytes) -> None:
    """Replace `path` with `data` crash-safely: temp file, fsync, rename, fsync of the directory."""
    tmp = path + ".tmp"
    f = fs.open(tmp)
    try:
        f.truncate(0)
        f.append(data)
        f.fsync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.fsync_dir(os.path.dirname(path) or ".")


def write_checkpoint(fs: FileSystem, path: str, entries: list[tuple[object, ...]]) -> None:
    lines = [str(CHECKPOINT_VERSION), str(len(entries))]
    lines.extend(" ".join(str(field) for field in entry) for entry in entries)
    write_atomic(fs, path, ("\n".join(lines) + "\n").encode())


def read_checkpoint(fs: FileSystem, path: str, fields: int) -> list[list[str]] | None:
    """Entries as lists of `fields` strings; None if the file does not exist."""
    if not fs.exists(path):
        return None
    try:
        text = fs.read_file(path).decode("ascii")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not ascii") from exc
    if not text.endswith("\n"):  # every write ends with one: without it the file was cut short
        raise CheckpointError(f"{path}: no final newline (torn)")
    lines = text.split("\n")
    lines.pop()
    if len(lines) < 2 or lines[0] != str(CHECKPOINT_VERSION):
        raise CheckpointError(f"{path}: bad version line")
    try:
        count = int(lines[1])
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad count") from exc
    if count < 0 or count > CHECKPOINT_ENTRIES_MAX or len(lines) != 2 + count:
        raise CheckpointError(f"{path}: expected {count} entries, found {len(lines) - 2}")
    entries = [line.split(" ") for line in lines[2:]]
    if any(len(e) != fields for e in entries):
        raise CheckpointError(f"{path}: entry with the wrong number of fields")
    return entries


def read_int_checkpoint(fs: FileSystem, path: str) -> list[tuple[int, int]] | None:
    """A checkpoint of (int, int) pairs (leader epochs); CheckpointError if a field is not an int."""
    entries = read_checkpoint(fs, path, 2)
    if entries is None:
        return None
    try:
        return [(int(a), int(b)) for a, b in entries]
    except ValueError as exc:
        raise CheckpointError(f"{path}: non-integer field") from exc
