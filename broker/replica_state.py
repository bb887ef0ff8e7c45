"""A partition leader's view of its followers: ISR, maximal ISR, high watermark. Pure (sans-IO).

Time comes in as `now_ms` arguments; nothing here touches sockets, files or clocks. The asyncio
side (broker/partition.py, broker/isr_updater.py) feeds it follower fetches and the controller's
answers and acts on what it returns.

Definitions (Kafka's, KIP-497 / KRaft's AlterPartition):

* `isr` is the ISR the controller has *committed* (from the metadata image or an AlterPartition
  answer), with its `partition_epoch`.
* At most one ISR change is in flight (`pending`). The *maximal ISR* is the union of the committed
  ISR and the proposed one: an expansion counts at once (the controller may commit it and elect the
  new member straight away, so the high watermark must already wait for it), a shrink counts only
  once committed (until then a leader elected from the committed ISR could be the leaving member).
* The high watermark is min(log end offset) over the maximal ISR; a member whose log end is not
  known yet (no fetch since this broker became leader) holds it where it is. It never decreases.
* A follower is caught up at a fetch whose offset reaches the leader's log end; it is also
  credited with the previous fetch time if it reaches the leader's log end *as of* the previous
  fetch (Kafka's lastCaughtUpTimeMs). An ISR member not caught up within `replica_lag_time_max_ms`
  is out of sync; a non-member whose log end reaches the high watermark and this leader epoch's
  start offset is in sync again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UNKNOWN = -1


@dataclass(slots=True)
class FollowerState:
    log_end_offset: int = UNKNOWN
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    last_fetch_leader_end_offset: int = UNKNOWN


@dataclass(frozen=True, slots=True)
class IsrChange:
    """An AlterPartition to send: the proposed ISR for the committed `partition_epoch`."""

    new_isr: tuple[int, ...]
    partition_epoch: int
    leader_epoch: int


@dataclass(slots=True)
class LeaderState:
    local_id: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader_epoch: int
    partition_epoch: int
    epoch_start_offset: int            # the log end when this broker became leader in this epoch
    became_leader_ms: int
    followers: dict[int, FollowerState] = field(default_factory=dict)
    pending: IsrChange | None = None
    pending_sent_ms: int = 0

    def __post_init__(self) -> None:
        for replica in self.replicas:
            if replica != self.local_id:
                # Kafka's resetReplicaState: a follower gets a lag allowance from the leadership's start
                self.followers.setdefault(replica, FollowerState(last_caught_up_ms=self.became_leader_ms))

    def set_replicas(self, replicas: tuple[int, ...], now_ms: int) -> None:
        self.replicas = replicas
        for replica in replicas:
            if replica != self.local_id:
                self.followers.setdefault(replica, FollowerState(last_caught_up_ms=now_ms))
        for gone in [b for b in self.followers if b not in replicas]:
            del self.followers[gone]

    # -- views --------------------------------------------------------------------------------------------

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        if self.pending is None:
            return self.isr
        extra = tuple(b for b in self.pending.new_isr if b not in self.isr)
        return self.isr + extra

    def high_watermark(self, leader_end_offset: int, current: int) -> int:
        """min log end over the maximal ISR, never below `current`."""
        low = leader_end_offset
        for member in self.maximal_isr:
            if member == self.local_id:
                continue
            state = self.followers.get(member)
            if state is None or state.log_end_offset == UNKNOWN:
                return current
            low = min(low, state.log_end_offset)
        return max(low, current)

    def isr_size(self) -> int:
        """The committed ISR's size (min.insync.replicas counts committed members only)."""
        return len(self.isr)

    # -- inputs -------------------------------------------------------------------------------------------

    def on_follower_fetch(self, follower_id: int, fetch_offset: int, leader_end_offset: int, now_ms: int) -> bool:
        """A follower fetched from `fetch_offset` (= its log end). False if it is not a replica."""
        state = self.followers.get(follower_id)
        if state is None:
            return False
        if fetch_offset >= leader_end_offset:
            state.last_caught_up_ms = max(state.last_caught_up_ms, now_ms)
        elif state.last_fetch_leader_end_offset != UNKNOWN and fetch_offset >= state.last_fetch_leader_end_offset:
            state.last_caught_up_ms = max(state.last_caught_up_ms, state.last_fetch_ms)
        state.log_end_offset = fetch_offset
        state.last_fetch_ms = now_ms
        state.last_fetch_leader_end_offset = leader_end_offset
        return True

    def on_committed(self, isr: tuple[int, ...], partition_epoch: int) -> None:
        """The controller committed this ISR (image or AlterPartition answer)."""
        if partition_epoch < self.partition_epoch:
            return
        self.isr = isr
        self.partition_epoch = partition_epoch
        if self.pending is not None and (set(self.pending.new_isr) == set(isr)
                                         or partition_epoch > self.pending.partition_epoch):
            self.pending = None

    def on_change_failed(self) -> None:
        """The controller refused or did not answer: propose again later from the committed state."""
        self.pending = None

    # -- decisions ----------------------------------------------------------------------------------------

    def out_of_sync(self, now_ms: int, leader_end_offset: int, lag_max_ms: int) -> list[int]:
        out = []
        for member in self.isr:
            if member == self.local_id:
                continue
            state = self.followers.get(member)
            if state is None:
                continue
            if state.log_end_offset != leader_end_offset and now_ms - state.last_caught_up_ms > lag_max_ms:
                out.append(member)
        return out

    def caught_up(self, high_watermark: int) -> list[int]:
        out = []
        for replica, state in self.followers.items():
            if replica in self.isr or state.log_end_offset == UNKNOWN:
                continue
            if state.log_end_offset >= high_watermark and state.log_end_offset >= self.epoch_start_offset:
                out.append(replica)
        return out

    def propose(self, now_ms: int, leader_end_offset: int, high_watermark: int, lag_max_ms: int,
                eligible: frozenset[int] | None = None) -> IsrChange | None:
        """The ISR change to send, or None (nothing to change). A pending change whose outcome is
        unknown (no answer) is sent again as it is: dropping it could let the high watermark pass an
        expansion the controller did commit. `eligible`: brokers the metadata shows active."""
        if self.pending is not None:
            return self.pending
        leaving = set(self.out_of_sync(now_ms, leader_end_offset, lag_max_ms))
        joining = [b for b in self.caught_up(high_watermark) if eligible is None or b in eligible]
        if not leaving and not joining:
            return None
        new_isr = tuple(b for b in self.replicas if (b in self.isr and b not in leaving) or b in joining)
        if not new_isr or self.local_id not in new_isr:
            return None
        self.pending = IsrChange(new_isr, self.partition_epoch, self.leader_epoch)
        self.pending_sent_ms = now_ms
        return self.pending
