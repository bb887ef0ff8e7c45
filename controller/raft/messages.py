"""Messages between Raft cores: one immutable NamedTuple with a type tag.

Replication is pull-based, as in KRaft (see docs/raft.md): followers and observers send FETCH to
the leader; the leader answers with entries, a divergence hint, a snapshot or "not leader".
Elections are Raft's (§5.2) with pre-vote (thesis §9.6, KIP-996). A later driver maps them to
Kafka RPCs:

==================== ========================================== =====================================
type                 meaning                                    Kafka RPC
==================== ========================================== =====================================
PRE_VOTE / _RESP     "would you vote for me in term+1?"         Vote v2 with PreVote=true
VOTE / _RESP         RequestVote                                Vote (52)
BEGIN_QUORUM_EPOCH   new leader announces its term              BeginQuorumEpoch (53)
BEGIN_QUORUM_..._RESP only to a stale leader: "term is higher"  BeginQuorumEpoch response, FENCED
FETCH                "I have (index, log_term); send more"      Fetch (1) on __cluster_metadata-0
FETCH_RESP           entries / DIVERGING / SNAPSHOT / NOT_LEADER Fetch response (DivergingEpoch,
                                                                SnapshotId -> FetchSnapshot (59),
                                                                NOT_LEADER_OR_FOLLOWER + leader)
TIMEOUT_NOW          leadership transfer: "campaign now"        EndQuorumEpoch (54) w/ preferred
==================== ========================================== =====================================

Field meanings by type (unused fields keep their defaults):

* every message: `type`, `term` (sender's current term; for PRE_VOTE the term it would campaign
  in), `src`, `dst`.
* PRE_VOTE, VOTE: `index`/`log_term` = candidate's last log index and term; `transfer` = sent
  because of TIMEOUT_NOW (voters then ignore their leader lease).
* *_VOTE_RESP: `reject`.
* FETCH: `index`/`log_term` = the fetcher's anchor (prevLogIndex/prevLogTerm; Kafka's fetch
  offset - 1 and LastFetchedEpoch); `commit` = fetcher's commit index; `fetch_id` = correlation
  id echoed in the response.
* FETCH_RESP status OK: `index`/`log_term` = the validated anchor, `entries` follow it,
  `commit` = leader's commit index (the high watermark). DIVERGING: `index`/`log_term` = the
  rejected anchor, `hint_index`/`hint_term` = leader's end of the diverging term. SNAPSHOT:
  `snapshot`. NOT_LEADER: `leader_hint` (None if unknown). All: `fetch_id`.
* BEGIN_QUORUM_EPOCH_RESP: `leader_hint`.

Messages are compared and hashed as tuples; they may be duplicated and reordered by a network.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from .storage import Entry, Snapshot


class MessageType(enum.IntEnum):
    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    BEGIN_QUORUM_EPOCH = 5
    BEGIN_QUORUM_EPOCH_RESP = 6
    FETCH = 7
    FETCH_RESP = 8
    TIMEOUT_NOW = 9


class FetchStatus(enum.IntEnum):
    OK = 0
    DIVERGING = 1
    SNAPSHOT = 2
    NOT_LEADER = 3


class Message(NamedTuple):
    type: MessageType
    term: int
    src: int
    dst: int
    index: int = 0
    log_term: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    status: FetchStatus = FetchStatus.OK
    hint_index: int = 0
    hint_term: int = 0
    leader_hint: int | None = None
    snapshot: Snapshot | None = None
    transfer: bool = False
    fetch_id: int = 0

    def __repr__(self) -> str:  # compact, for simulator traces
        parts = [f"{self.type.name} t{self.term} {self.src}->{self.dst}"]
        if self.type in (MessageType.FETCH, MessageType.VOTE, MessageType.PRE_VOTE) or (
                self.type == MessageType.FETCH_RESP and self.status != FetchStatus.NOT_LEADER):
            parts.append(f"i{self.index}/t{self.log_term}")
        if self.entries:
            parts.append(f"ents[{self.entries[0].index}..{self.entries[-1].index}]")
        if self.type in (MessageType.FETCH, MessageType.FETCH_RESP):
            parts.append(f"c{self.commit} #{self.fetch_id}")
        if self.type == MessageType.FETCH_RESP and self.status != FetchStatus.OK:
            parts.append(self.status.name)
            if self.status == FetchStatus.DIVERGING:
                parts.append(f"hint{self.hint_index}/t{self.hint_term}")
            elif self.status == FetchStatus.SNAPSHOT and self.snapshot is not None:
                parts.append(f"snap{self.snapshot.index}/t{self.snapshot.term}")
        if self.reject:
            parts.append("REJECT")
        if self.transfer:
            parts.append("transfer")
        if self.leader_hint is not None:
            parts.append(f"leader={self.leader_hint}")
        return "<" + " ".join(parts) + ">"
