"""Finishing or rolling back file operations a crash interrupted, before segments are loaded.

The cleaner (storage/compaction.py) replaces segments with this sequence, each step durable
before the next (directory fsync between them):

1. write `B.log.cleaned` (+ `B.index.cleaned`, `B.timeindex.cleaned`), fsync;
2. rename the indexes, then the log, to the `.swap` suffix: `B.log.swap` existing is the commit
   point of the swap;
3. delete the replaced segments' files (each renamed to `.deleted` first, then removed);
4. rename `B.log.swap` to `B.log` (the indexes are rebuilt on load if missing).

So on open:
* `*.cleaned` files are an unfinished rewrite: deleted (roll back; the originals are intact);
* `*.deleted` and `*.tmp` files are leftovers: deleted;
* `B.log.swap` is a committed swap: every `Y.log` with B <= Y < the swap's next offset is
  replaced by it (deleted with its indexes), then the swap is renamed into place and its index
  files dropped (rebuilt from the log, never trusted).
"""

from __future__ import annotations

import os

from client.wire.records import iter_batch_headers
from storage.files import FileSystem

SWAP_SCAN_BLOCK_BYTES = 1 << 20


def _swap_next_offset(fs: FileSystem, path: str, base_offset: int) -> int:
    f = fs.open(path, create=False)
    try:
        next_offset = base_offset
        position = 0
        while position < f.size:
            block = f.pread(position, min(SWAP_SCAN_BLOCK_BYTES, f.size - position))
            at = 0
            for at_pos, header in iter_batch_headers(block):
                next_offset = header.base_offset + header.last_offset_delta + 1
                at = at_pos + header.total_size
            if at == 0:
                # a batch larger than the block: read its header and jump
                if len(block) >= 61:
                    from client.wire.records import read_header
                    header = read_header(block)
                    size = header.total_size
                    if size >= 61 and position + size <= f.size:
                        next_offset = header.base_offset + header.last_offset_delta + 1
                        position += size
                        continue
                break
            position += at
        return next_offset
    finally:
        f.close()


def complete_interrupted_swaps(fs: FileSystem, directory: str) -> None:
    names = fs.listdir(directory)
    changed = False
    for name in names:
        if name.endswith((".cleaned", ".deleted", ".tmp")):
            fs.remove(os.path.join(directory, name))
            changed = True
    names = fs.listdir(directory)
    for name in names:
        if not name.endswith(".log.swap"):
            continue
        stem = name[: -len(".log.swap")]
        if not stem.isdigit():
            continue
        base = int(stem)
        swap_path = os.path.join(directory, name)
        next_offset = _swap_next_offset(fs, swap_path, base)
        for other in fs.listdir(directory):
            if other.endswith(".log") and other[:-4].isdigit():
                other_base = int(other[:-4])
                if base <= other_base < max(next_offset, base + 1):
                    for ext in (".log", ".index", ".timeindex"):
                        path = os.path.join(directory, f"{other_base:020d}{ext}")
                        if fs.exists(path):
                            fs.remove(path)
        for ext in (".index.swap", ".timeindex.swap"):
            path = os.path.join(directory, stem + ext)
            if fs.exists(path):
                fs.remove(path)
        fs.rename(swap_path, os.path.join(directory, stem + ".log"))
        changed = True
    for name in fs.listdir(directory):  # index swaps without a log swap: the swap never committed
        if name.endswith((".index.swap", ".timeindex.swap")):
            fs.remove(os.path.join(directory, name))
            changed = True
    if changed:
        fs.fsync_dir(directory)
