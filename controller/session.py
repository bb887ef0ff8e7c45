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

    def __post_init__(self) -> None:
        assert self.broker_heartbeat_interval_ms > 0 and self.fence_check_interval_ms > 0
        assert self.broker_lease_ms >= 3 * self.broker_heartbeat_interval_ms, "lease must survive 2 lost heartbeats"
        assert self.broker_session_ms >= self.broker_lease_ms + self.heartbeat_round_trip_max_ms, \
            "session must exceed lease + worst round trip (a broker stops leading before it is fenced)"
        assert self.broker_heartbeat_interval_ms < self.connection_grace_ms < self.broker_lease_ms
        assert 2 * self.election_timeout_ms <= self.controller_fetch_timeout_ms
        assert self.fence_check_interval_ms <= self.broker_heartbeat_interval_ms


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

    def start_fresh(self, broker_ids: Iterable[int], now_ms: int) -> None:
        self._deadlines = {b: now_ms + self.timings.broker_session_ms for b in broker_ids}

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
