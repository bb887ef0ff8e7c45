"""Broker sessions on the active controller, and the timing table they rest on.

Defaults (`ControllerTimings`), one table; the inequalities are asserted at construction:

| setting                       | default | meaning                                                          |
|-------------------------------|---------|------------------------------------------------------------------|
| election_timeout_ms           | 500     | Raft T (RaftNodeConfig: tick_ms 50 x election_timeout_ticks 10)  |
| controller_fetch_timeout_ms   | 1000    | longest a follower waits for a silent leader before campaigning  |
|                               |         | (the top of the [T, 2T) election draw)                           |
| broker_heartbeat_interval_ms  | 200     | a broker sends BrokerHeartbeat this often                        |
| broker_lease_ms               | 1000    | the broker may lead until (send time of its last *acknowledged*  |
|                               |         | heartbeat) + this                                                |
| heartbeat_round_trip_max_ms   | 500     | worst heartbeat round trip the lease/session margin covers       |
| broker_session_ms             | 1500    | the controller fences a broker this long after the receipt of    |
|                               |         | its last heartbeat                                               |
| connection_grace_ms           | 300     | a broker whose controller connection dropped is fenced if it has |
|                               |         | not heartbeated on a new connection within this                  |
| fence_check_interval_ms       | 50      | the active controller's fencing timer                            |
| lease_barrier_interval_ms     | 250     | the active controller commits a NoOpRecord (a *lease barrier*)   |
|                               |         | when its last committed write is older than this (KIP-835's      |
|                               |         | idle NoOpRecord); a heartbeat's lease is cut by the barrier's age|
| failover_lease_margin_ms      | 50      | clock-rate drift allowance of the failover bound (below)         |
| failover_rejoin_ms            | 750     | after a failover, a live broker gets at least this long to reach |
|                               |         | the new active controller before it may be fenced                |
| leader_imbalance_check_interval_ms | 2000 | automatic preferred-leader election (service.py); Kafka's       |
|                               |         | leader.imbalance.check.interval.seconds is 300 s                 |

Inequalities (why):

* `broker_lease_ms >= 3 * broker_heartbeat_interval_ms`: two lost heartbeats do not cost a lease.
* `broker_session_ms >= broker_lease_ms + heartbeat_round_trip_max_ms`: the controller's session
  for a heartbeat starts when it *receives* it, the broker's lease when it *sent* the last one that
  was acknowledged (never a later one than the controller received), so the broker's lease ends
  before the controller can fence it and elect another leader, with a round trip to spare for
  timer lateness and drift between the two monotonic clocks. A fenced broker has stopped leading.
* `broker_heartbeat_interval_ms < connection_grace_ms < broker_lease_ms`: a broker that lost its
  connection reconnects and heartbeats within the grace; a broker whose connection dropped drops
  its lease too (controller_client.py), so a quick fence does not create two leaders.
* `2 * election_timeout_ms <= controller_fetch_timeout_ms`: a new controller is elected within
  the fetch timeout plus one election round; it then gives every registered broker a fresh
  session (now + broker_session_ms) instead of fencing them all — a broker heartbeating to the
  old controller has a lease of its own and keeps it.
* `fence_check_interval_ms <= broker_heartbeat_interval_ms`.
* `broker_lease_ms - lease_barrier_interval_ms >= 3 * broker_heartbeat_interval_ms`: a granted lease
  is cut by up to one barrier interval (below) and must still survive two lost heartbeats.
* `failover_rejoin_ms >= 3 * broker_heartbeat_interval_ms` and `failover_rejoin_ms <=
  broker_session_ms`: a live broker whose controller died finds the new one (its ControllerClient
  cycles the voters with a backoff of at most 250 ms +50 %) well within the window.

## Lease barriers, and fencing sooner after a failover

A broker's lease is (send time `s` of its last acknowledged heartbeat) + granted lease. After a
failover the new active controller B does not know when the old one (A) last acknowledged a
heartbeat: A may still believe it leads (until check-quorum deposes it) while B is elected. A fresh
session of `broker_session_ms` from B's activation was the old answer; it relies on A stepping down
within one election timeout of B's election (timing, not causality) and costs a dead broker a full
session after the election. The barrier makes the bound causal:

1. **Granting (old controller A, any term).** A keeps `p`, the clock reading taken just *before* it
   proposed the latest entry of its term that is now committed (any write; a NoOpRecord barrier
   when it has been idle for `lease_barrier_interval_ms`). For a heartbeat it received at `r`
   (read at `r`; s <= r), it grants `lease = broker_lease_ms - max(0, r - p)` (none if it has no
   committed entry of its term yet: it first commits a barrier). So the broker's lease ends at
   `s + lease <= r + broker_lease_ms - (r - p) = p + broker_lease_ms`.
2. **Evidence (Raft).** The entry `E` proposed at `p` is committed, so every later leader holds it
   (Leader Completeness, §5.4). B received E (or a snapshot covering it, made after it) at some
   time `h >= p`: E did not exist before A appended it, and A appended it after `p`.
3. **Knowing h (new controller B).** A candidate, and a leader, accept no entries of earlier terms
   (a fetch response of term < its own is stale), so B's log below its own NOOP is what it held as
   a follower. While not leading, ControllerService notes the first time `U` at which it observed
   its log in the state (last offset, last entry's term). On activation in term T, if the log's
   entries of terms < T still end with that same (offset, term), its pre-term log *is* that log
   (Log Matching, §5.3): every entry of it, E included, arrived by `U`, so `h <= U`.
4. **Fencing.** Every lease granted by any earlier controller therefore ended by
   `U + broker_lease_ms` (+ clock-rate drift of three monotonic clocks over ~1 s:
   `failover_lease_margin_ms`). B gives each registered broker the session deadline
   `max(U + broker_lease_ms + failover_lease_margin_ms, activation + failover_rejoin_ms)`.
   The second term is for liveness only: a live broker lost its lease when its connection to A
   dropped and needs a moment to find B; fencing it would shrink ISRs for nothing. When the
   observation does not match (B never observed its log as a follower in this process, or the log
   changed between the observation and the election), B falls back to `activation +
   broker_session_ms` (the old rule).

With A killed at t0: U ~ t0 (B's last fetch from A), B active at t0 + 0.55..1.05 s, so a broker
that never comes back (A's own, in combined mode) is fenced at ~max(t0 + 1.05, active + 0.75) s
instead of active + 1.5 s.

Nothing here needs a bound on message delay: only that the monotonic clocks of the broker, A and
B run at the same rate within `failover_lease_margin_ms` per `broker_lease_ms`.

`SessionTracker` is pure (time is an argument): the active controller's deadlines per broker id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ControllerTimings:
    election_timeout_ms: int = 500
    controller_fetch_timeout_ms: int = 1000
    broker_heartbeat_interval_ms: int = 200
    broker_lease_ms: int = 1000
    heartbeat_round_trip_max_ms: int = 500
    broker_session_ms: int = 1500
    connection_grace_ms: int = 300
    fence_check_interval_ms: int = 50
    lease_barrier_interval_ms: int = 250
    failover_lease_margin_ms: int = 50
    failover_rejoin_ms: int = 750
    leader_imbalance_check_interval_ms: int = 2000

    def __post_init__(self) -> None:
        assert self.broker_heartbeat_interval_ms > 0 and self.fence_check_interval_ms > 0
        assert self.broker_lease_ms >= 3 * self.broker_heartbeat_interval_ms, "lease must survive 2 lost heartbeats"
        assert self.broker_session_ms >= self.broker_lease_ms + self.heartbeat_round_trip_max_ms, \
            "session must exceed lease + worst round trip (a broker stops leading before it is fenced)"
        assert self.broker_heartbeat_interval_ms < self.connection_grace_ms < self.broker_lease_ms
        assert 2 * self.election_timeout_ms <= self.controller_fetch_timeout_ms
        assert self.fence_check_interval_ms <= self.broker_heartbeat_interval_ms
        assert self.lease_barrier_interval_ms > 0 and self.failover_lease_margin_ms >= 0
        assert self.broker_lease_ms - self.lease_barrier_interval_ms >= 3 * self.broker_heartbeat_interval_ms, \
            "a lease cut by one barrier interval must survive 2 lost heartbeats"
        assert 3 * self.broker_heartbeat_interval_ms <= self.failover_rejoin_ms <= self.broker_session_ms
        assert self.leader_imbalance_check_interval_ms > 0


class SessionTracker:
    """Session deadlines (monotonic ms) of the brokers the active controller has heard from.

    Dropped wholesale when leadership is lost; `start_fresh` on becoming active. Bounded by the
    number of registered brokers (limits.BROKERS_MAX): only registered ids are touched.
    """

    def __init__(self, timings: ControllerTimings) -> None:
        self.timings = timings
        self._deadlines: dict[int, int] = {}

    @property
    def deadlines(self) -> Mapping[int, int]:
        return self._deadlines

    def start_fresh(self, broker_ids: Iterable[int], now_ms: int, leases_end_by_ms: int | None = None) -> None:
        """On activation. `leases_end_by_ms`: a time (this clock) by which every lease an earlier
        controller granted has ended (see "Lease barriers" above), or None if unknown: then every
        broker gets a whole session from now."""
        t = self.timings
        if leases_end_by_ms is None:
            deadline = now_ms + t.broker_session_ms
        else:
            deadline = max(leases_end_by_ms + t.failover_lease_margin_ms, now_ms + t.failover_rejoin_ms)
        self._deadlines = {b: deadline for b in broker_ids}

    def granted_lease_ms(self, received_ms: int, barrier_ms: int | None) -> int:
        """The lease for a heartbeat read at `received_ms` when the latest committed entry of this term
        was proposed after `barrier_ms`: cut by the barrier's age, so it ends by barrier + lease."""
        if barrier_ms is None:
            return 0
        return max(0, self.timings.broker_lease_ms - max(0, received_ms - barrier_ms))

    def clear(self) -> None:
        self._deadlines = {}

    def touch(self, broker_id: int, now_ms: int) -> None:
        """A heartbeat or registration received at now_ms."""
        self._deadlines[broker_id] = now_ms + self.timings.broker_session_ms

    def forget(self, broker_id: int) -> None:
        self._deadlines.pop(broker_id, None)

    def connection_dropped(self, broker_id: int, now_ms: int) -> None:
        """Its controller connection dropped: fence unless it heartbeats again within the grace."""
        if broker_id in self._deadlines:
            self._deadlines[broker_id] = min(self._deadlines[broker_id], now_ms + self.timings.connection_grace_ms)

    def alive(self, broker_id: int, now_ms: int) -> bool:
        deadline = self._deadlines.get(broker_id)
        return deadline is not None and deadline > now_ms
