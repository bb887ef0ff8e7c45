"""The Raft hard state of one controller node: the `quorum-state` file (KRaft's name).

Layout: one JSON object (orjson) and a newline, in `<data_dir>/__cluster_metadata-0/quorum-state`::

    {"data_version": 0, "node_id": 1, "term": 7, "vote": 2, "commit": 41}

* `term` — the current term (§5.1; KRaft's leaderEpoch), `vote` — the candidate voted for in that
  term or null (§5.2; KRaft's votedId), `commit` — the commit index when the file was last written.
  Raft requires only term and vote to be durable before a message that depends on them is sent;
  the commit index is an optimisation (a restarted node re-applies without waiting for a leader),
  and a stale one is harmless, so the driver rewrites this file only when term or vote changes.
* `node_id` guards against starting a node on another node's data directory.

Every write replaces the file atomically (`storage.checkpoint.write_atomic`: temp file, fsync,
rename, directory fsync), so a crash leaves the old or the new state, never a mix. A missing file
is a fresh node (term 0, no vote). A file that exists but does not parse, or belongs to another
node, raises `QuorumStateError`: it is never treated as missing, because forgetting a vote could
make this node vote twice in one term (§5.2).
"""

from __future__ import annotations

import os

import orjson

from controller.raft.storage import HardState
from storage.checkpoint import write_atomic
from storage.files import FileSystem

QUORUM_STATE_FILE = "quorum-state"
QUORUM_STATE_VERSION = 0
QUORUM_STATE_BYTES_MAX = 4096  # the file is ~100 bytes; anything larger is not ours
_INT64_MAX = 2**63 - 1
_FIELDS = frozenset({"data_version", "node_id", "term", "vote", "commit"})


class QuorumStateError(Exception):
    """The quorum-state file exists but cannot be trusted (corrupt, foreign, unknown version)."""


def _is_int(value: object, low: int = 0) -> bool:
    return type(value) is int and low <= value <= _INT64_MAX


def encode_quorum_state(node_id: int, hs: HardState) -> bytes:
    assert _is_int(hs.term) and _is_int(hs.commit) and (hs.vote is None or _is_int(hs.vote)), hs
    return orjson.dumps({"data_version": QUORUM_STATE_VERSION, "node_id": node_id, "term": hs.term,
                         "vote": hs.vote, "commit": hs.commit}) + b"\n"


def decode_quorum_state(data: bytes, node_id: int, where: str = QUORUM_STATE_FILE) -> HardState:
    if len(data) > QUORUM_STATE_BYTES_MAX or not data.endswith(b"\n"):
        raise QuorumStateError(f"{where}: too large or no final newline")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise QuorumStateError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        raise QuorumStateError(f"{where}: expected the fields {sorted(_FIELDS)}")
    if obj["data_version"] != QUORUM_STATE_VERSION:
        raise QuorumStateError(f"{where}: unknown data_version {obj['data_version']!r}")
    if obj["node_id"] != node_id:
        raise QuorumStateError(f"{where}: written by node {obj['node_id']!r}, this is node {node_id}")
    term, vote, commit = obj["term"], obj["vote"], obj["commit"]
    if not (_is_int(term) and _is_int(commit) and (vote is None or _is_int(vote))):
        raise QuorumStateError(f"{where}: term, vote or commit out of range")
    return HardState(term, vote, commit)


class QuorumStateStore:
    """Reads and atomically rewrites `<directory>/quorum-state` for `node_id`."""

    def __init__(self, fs: FileSystem, directory: str, node_id: int) -> None:
        self.fs = fs
        self.path = os.path.join(directory, QUORUM_STATE_FILE)
        self.node_id = node_id
        self.writes = 0

    def read(self) -> HardState:
        """The persisted hard state; `HardState()` when the file does not exist."""
        if not self.fs.exists(self.path):
            return HardState()
        return decode_quorum_state(self.fs.read_file(self.path), self.node_id, self.path)

    def write(self, hs: HardState) -> None:
        """Durable when this returns (fsync of the file and of the directory)."""
        write_atomic(self.fs, self.path, encode_quorum_state(self.node_id, hs))
        self.writes += 1
