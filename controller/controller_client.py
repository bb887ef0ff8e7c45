"""ControllerClient: a broker's (or an admin forwarder's) connection to the active controller.

Sends ControllerRequest frames (controller_rpc.py, API key 1001) to one controller listener at a
time, one request in flight (a lock), and answers with the operation's result payload (a dict).
Finding the active controller: start at the lowest voter id; NOT_CONTROLLER with a leader id
moves to that voter at once; NOT_CONTROLLER without one (or pointing back at the same node, which
leads but is not active yet), a connection error, or an attempt timeout moves on (next voter) after
an exponential backoff with ±50 % jitter; REQUEST_TIMED_OUT retries the same controller. All of
it bounded by the call's deadline (`ControllerUnavailableError` when it passes). Other routing
errors raise `ControllerError`; per-item errors are inside the returned payload.

Retries are safe: register_broker and heartbeat are idempotent on the controller; a retried
create_topics may answer TOPIC_ALREADY_EXISTS for a topic the lost attempt created.

The broker lease (session.py): `heartbeat()` sets `lease_deadline` (loop.time() seconds) to the
send time of the call's first attempt (no later than the attempt that was acknowledged) plus the
returned lease; losing the connection cuts the lease to "now" — the controller may fence this
broker connection_grace_ms after it saw the connection drop, so the broker must stop leading at
once until a heartbeat on a new connection is acknowledged. `lease_valid()` says whether the
broker may act as a partition leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from client.wire.codec import ProtocolError
from client.wire.errors import ErrorCode
from controller.controller_rpc import PAYLOAD_BYTES_MAX, decode_response, encode_request

_SIZE = struct.Struct(">i")
CORRELATION_ID_MAX = 2**31 - 1


class ControllerError(Exception):
    def __init__(self, code: int, payload: Mapping[str, Any]) -> None:
        super().__init__(f"controller error {code}: {payload.get('message', '')}")
        self.code = code
        self.payload = payload


class ControllerUnavailableError(TimeoutError):
    """No active controller answered before the call's deadline."""


@dataclass(frozen=True, slots=True)
class ControllerClientConfig:
    attempt_timeout_ms: int = 1000     # connect + one request/response
    deadline_ms: int = 5000            # default for a whole call, retries included
    backoff_min_ms: int = 20
    backoff_max_ms: int = 250
    response_bytes_max: int = PAYLOAD_BYTES_MAX + 4096

    def __post_init__(self) -> None:
        assert 0 < self.attempt_timeout_ms <= self.deadline_ms
        assert 0 < self.backoff_min_ms <= self.backoff_max_ms


class ControllerClient:
    def __init__(self, voters: Mapping[int, tuple[str, int]], config: ControllerClientConfig | None = None,
                 client_id: str = "replog-controller-client", rng: random.Random | None = None) -> None:
        assert voters, "at least one controller"
        self.voters = dict(voters)
        self.config = config or ControllerClientConfig()
        self.client_id = client_id
        self.rng = rng or random.Random()
        self._order = sorted(self.voters)
        self.target = self._order[0]
        self.lease_deadline = 0.0
        self.redirects = 0
        self.reconnects = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._correlation_id = 0
        self._lock = asyncio.Lock()

    # -- the retry loop ----------------------------------------------------------------------------------

    async def call(self, op: str, payload: dict[str, Any], deadline_s: float | None = None) -> dict[str, Any]:
        cfg = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (cfg.deadline_ms / 1000 if deadline_s is None else deadline_s)
        backoff_ms = float(cfg.backoff_min_ms)
        last: object = "no attempt"
        async with self._lock:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ControllerUnavailableError(f"{op}: no active controller before the deadline ({last})")
                try:
                    code, leader_id, body = await asyncio.wait_for(
                        self._attempt(op, payload), min(cfg.attempt_timeout_ms / 1000, remaining))
                except (OSError, EOFError, TimeoutError, ProtocolError) as exc:
                    last = exc
                    self._disconnect()
                    self.target = self._next(self.target)
                else:
                    if code == ErrorCode.NONE:
                        return body
                    if code == ErrorCode.NOT_CONTROLLER:
                        last = f"NOT_CONTROLLER from {self.target} (leader {leader_id})"
                        if leader_id is not None and leader_id in self.voters and leader_id != self.target:
                            self.redirects += 1
                            self._disconnect()
                            self.target = leader_id
                            continue  # a known leader elsewhere: no backoff
                        if leader_id is None:
                            self._disconnect()
                            self.target = self._next(self.target)
                    elif code == ErrorCode.REQUEST_TIMED_OUT:
                        last = "REQUEST_TIMED_OUT"
                    else:
                        raise ControllerError(code, body)
                delay = backoff_ms * (0.5 + self.rng.random()) / 1000
                await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
                backoff_ms = min(backoff_ms * 2, cfg.backoff_max_ms)

    def _next(self, voter_id: int) -> int:
        order = self._order
        return order[(order.index(voter_id) + 1) % len(order)] if voter_id in order else order[0]

    async def _attempt(self, op: str, payload: dict[str, Any]) -> tuple[int, int | None, dict[str, Any]]:
        if self._writer is None:
            host, port = self.voters[self.target]
            self._reader, self._writer = await asyncio.open_connection(host, port)
            self.reconnects += 1
        reader, writer = self._reader, self._writer
        assert reader is not None
        self._correlation_id = (self._correlation_id + 1) % CORRELATION_ID_MAX
        cid = self._correlation_id
        writer.write(encode_request(op, payload, cid, self.client_id))
        await writer.drain()
        try:
            (size,) = _SIZE.unpack(await reader.readexactly(4))
            if not 4 <= size <= self.config.response_bytes_max:
                raise ProtocolError(f"response frame of {size} bytes")
            frame = await reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise EOFError("controller closed the connection") from exc
        got, code, leader_id, body = decode_response(frame)
        if got != cid:
            raise ProtocolError(f"response to correlation id {got}, expected {cid}")
        return code, leader_id, body

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
            # our controller session may be fenced after the grace: the lease ends now
            self.lease_deadline = min(self.lease_deadline, asyncio.get_running_loop().time())
        self._reader = self._writer = None

    async def close(self) -> None:
        writer = self._writer
        self._disconnect()
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # -- operations (payload shapes: docs/controller.md) ----------------------------------------------------

    def lease_valid(self) -> bool:
        return asyncio.get_running_loop().time() < self.lease_deadline

    async def register_broker(self, broker_id: int, incarnation_id: bytes, host: str, port: int,
                              rack: str | None = None, listener_name: str = "PLAINTEXT",
                              deadline_s: float | None = None) -> dict[str, Any]:
        return await self.call("register_broker", {
            "broker_id": broker_id, "incarnation_id": incarnation_id.hex(), "rack": rack,
            "listeners": [{"name": listener_name, "host": host, "port": port}]}, deadline_s)

    async def heartbeat(self, broker_id: int, broker_epoch: int, metadata_offset: int, want_fence: bool = False,
                        want_shutdown: bool = False, deadline_s: float | None = None) -> dict[str, Any]:
        sent = asyncio.get_running_loop().time()
        reply = await self.call("heartbeat", {
            "broker_id": broker_id, "broker_epoch": broker_epoch, "metadata_offset": metadata_offset,
            "want_fence": want_fence, "want_shutdown": want_shutdown}, deadline_s)
        if reply.get("error_code") == ErrorCode.NONE and reply.get("lease_ms", 0) > 0:
            self.lease_deadline = max(self.lease_deadline, sent + reply["lease_ms"] / 1000)
        return reply

    async def create_topics(self, topics: Sequence[Mapping[str, Any]], validate_only: bool = False,
                            deadline_s: float | None = None) -> dict[str, Any]:
        """topics: [{name, num_partitions?, replication_factor?, configs?}]."""
        return await self.call("create_topics", {"topics": [dict(t) for t in topics],
                                                 "validate_only": validate_only}, deadline_s)

    async def delete_topics(self, names: Sequence[str] = (), topic_ids: Sequence[bytes] = (),
                            deadline_s: float | None = None) -> dict[str, Any]:
        return await self.call("delete_topics", {"names": list(names), "topic_ids": [t.hex() for t in topic_ids]},
                               deadline_s)

    async def alter_configs(self, changes: Mapping[str, Mapping[str, str | None]], validate_only: bool = False,
                            deadline_s: float | None = None) -> dict[str, Any]:
        return await self.call("alter_configs", {"changes": {k: dict(v) for k, v in changes.items()},
                                                 "validate_only": validate_only}, deadline_s)

    async def alter_partition(self, broker_id: int, broker_epoch: int, partitions: Sequence[Mapping[str, Any]],
                              deadline_s: float | None = None) -> dict[str, Any]:
        """partitions: [{topic_id (hex), partition, leader_epoch, partition_epoch, new_isr: [[id, epoch]]}]."""
        return await self.call("alter_partition", {"broker_id": broker_id, "broker_epoch": broker_epoch,
                                                   "partitions": [dict(p) for p in partitions]}, deadline_s)

    async def allocate_producer_ids(self, broker_id: int, broker_epoch: int,
                                    deadline_s: float | None = None) -> dict[str, Any]:
        return await self.call("allocate_producer_ids", {"broker_id": broker_id, "broker_epoch": broker_epoch},
                               deadline_s)

    async def elect_preferred_leaders(self, partitions: Sequence[tuple[bytes, int]] | None = None,
                                      deadline_s: float | None = None) -> dict[str, Any]:
        raw = None if partitions is None else [[t.hex(), i] for t, i in partitions]
        return await self.call("elect_preferred_leaders", {"partitions": raw}, deadline_s)

    async def describe_quorum(self, deadline_s: float | None = None) -> dict[str, Any]:
        """{leader, epoch, high_watermark, voters: [{id, log_end_offset, lag}], brokers: [{id, host, port,
        fenced, leaders}]} from the active controller."""
        return await self.call("describe_quorum", {}, deadline_s)
