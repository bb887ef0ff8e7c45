"""Sans-IO Raft for the controller quorum (docs/raft.md).

Modules: `core` (the state machine and its Ready/advance contract), `log` (stable + unstable
log, commit and apply positions), `storage` (entries, hard state, snapshots, the in-memory mirror
of what the driver persisted), `progress` (the leader's view of each replica), `quorum`
(majority math), `messages`, `config`. Nothing here imports from the rest of the project, reads
a clock, draws global randomness or does I/O.
"""

from .config import RaftConfig
from .core import (
    EntryId,
    NotLeaderError,
    ProposalDroppedError,
    QuorumStatus,
    RaftCore,
    RaftError,
    Ready,
    ReplicaStatus,
    Role,
    SoftState,
)
from .log import RaftLog
from .messages import FetchStatus, Message, MessageType
from .progress import Progress, ProgressState, ProgressTracker
from .storage import EMPTY_SNAPSHOT, Entry, EntryType, HardState, MemoryStorage, Snapshot

__all__ = [
    "EMPTY_SNAPSHOT", "Entry", "EntryId", "EntryType", "FetchStatus", "HardState", "MemoryStorage", "Message",
    "MessageType", "NotLeaderError", "Progress", "ProgressState", "ProgressTracker", "ProposalDroppedError",
    "QuorumStatus", "RaftConfig", "RaftCore", "RaftError", "RaftLog", "Ready", "ReplicaStatus", "Role",
    "Snapshot", "SoftState",
]
