"""Producer id allocation that never reissues an id, even across crashes.

The file `producer-id-block` in the data directory holds the first id *not yet reserved*. Ids are
handed out from an in-memory block of `PRODUCER_ID_BLOCK_SIZE`; before the first id of a block is
handed out, the block's end is written (atomically, fsynced). A crash loses at most the unused
rest of a block, never reuses an id. (With the Raft controller, blocks come from the metadata log
instead, as KIP-730 does.)
"""

from __future__ import annotations

import os

from storage.checkpoint import write_atomic
from storage.files import FileSystem

PRODUCER_ID_FILE = "producer-id-block"
PRODUCER_ID_BLOCK_SIZE = 1000
FIRST_PRODUCER_ID = 1000


class ProducerIdAllocator:
    def __init__(self, data_dir: str, fs: FileSystem | None = None) -> None:
        self.fs = fs or FileSystem()
        self.path = os.path.join(data_dir, PRODUCER_ID_FILE)
        self._next = 0
        self._block_end = 0

    def load(self) -> None:
        reserved = FIRST_PRODUCER_ID
        if self.fs.exists(self.path):
            text = self.fs.read_file(self.path).decode("ascii", "replace").strip()
            if not text.isdigit():
                raise ValueError(f"{self.path} is corrupt: {text[:40]!r}")
            reserved = int(text)
        self._next = self._block_end = reserved

    def was_issued(self, producer_id: int) -> bool:
        """True for every id this broker ever handed out (all are below the reserved block end:
        ids from earlier runs are below the end loaded at start). A producer id outside that range
        never came from InitProducerId: Produce answers UNKNOWN_PRODUCER_ID."""
        return FIRST_PRODUCER_ID <= producer_id < self._next

    def allocate(self) -> int:
        if self._next >= self._block_end:
            end = self._next + PRODUCER_ID_BLOCK_SIZE
            write_atomic(self.fs, self.path, f"{end}\n".encode())
            self._block_end = end
        producer_id = self._next
        self._next += 1
        return producer_id
