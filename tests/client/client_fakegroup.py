"""A fake group coordinator on top of the scripted fake broker (client_fakebroker.FakeBroker).

`FakeGroupBroker` adds Kafka's classic group protocol, in memory, so the client's group member can
be tested before (and independently of) brokerd's coordinator: FindCoordinator (itself),
JoinGroup with the MEMBER_ID_REQUIRED round trip (v4+), a rebalance that waits for every known
member to rejoin (bounded by the rebalance timeout; a first join waits `initial_rebalance_delay_s`
for more members, like group.initial.rebalance.delay.ms), SyncGroup, Heartbeat, LeaveGroup, session
expiry (members whose heartbeats stop are removed and the group rebalances), OffsetCommit /
OffsetFetch (commits accepted during PreparingRebalance with the current generation, refused in
CompletingRebalance, a generation -1 commit only for an empty group), ListGroups and
DescribeGroups, and DeleteGroups when the schema exists.

Faults: `group_errors[api_key]` is a deque of error codes; the next request of that API is
answered with the first one (and nothing else happens). `fail_next_commit_partitions` likewise
for OffsetCommit per partition. A JoinGroup/SyncGroup answer may take as long as the rebalance:
the fake awaits it in the connection's serving task (one request at a time per connection, as
Kafka), so clients must use a dedicated coordinator connection.

Requests are logged in `requests` (api_key, version) as in FakeBroker; `joins` counts JoinGroup
requests per member id.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections import defaultdict, deque
from typing import Any

from client_fakebroker import ADVERTISED, FakeBroker

from client.wire.errors import ErrorCode
from client.wire.framing import FrameDecoder
from client.wire.messages import REQUESTS
from client.wire.protocol import decode_request, encode_response

GROUP_ADVERTISED = {**ADVERTISED, 8: (2, 7), 9: (1, 7), 10: (0, 3), 11: (0, 7), 12: (0, 4), 13: (0, 5),
                    14: (0, 5), 15: (0, 5), 16: (0, 4)}
if 42 in REQUESTS:
    GROUP_ADVERTISED[42] = (0, 2)
SYNC_WAIT_S = 10.0


class _Member:
    def __init__(self, member_id: str, instance_id: str | None, client_id: str) -> None:
        self.member_id = member_id
        self.instance_id = instance_id
        self.client_id = client_id
        self.protocols: list[tuple[str, bytes]] = []
        self.session_timeout_ms = 10_000
        self.rebalance_timeout_ms = 10_000
        self.last_heartbeat = 0.0
        self.join: asyncio.Future[dict[str, Any]] | None = None
        self.sync: asyncio.Future[dict[str, Any]] | None = None
        self.assignment = b""


class _Group:
    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.state = "Empty"
        self.generation = 0
        self.protocol: str | None = None
        self.protocol_type = ""
        self.leader = ""
        self.members: dict[str, _Member] = {}
        self.pending: set[str] = set()  # ids handed out with MEMBER_ID_REQUIRED
        self.offsets: dict[tuple[str, int], int] = {}
        self.rebalance: asyncio.Task[None] | None = None


class FakeGroupBroker(FakeBroker):
    def __init__(self, topics: dict[str, int] | None = None, node_id: int = 1,
                 advertised: dict[int, tuple[int, int]] | None = None, *,
                 initial_rebalance_delay_s: float = 0.1) -> None:
        super().__init__(topics, node_id, advertised or GROUP_ADVERTISED)
        self.groups: dict[str, _Group] = {}
        self.group_errors: dict[int, deque[int]] = defaultdict(deque)
        self.fail_next_commit_partitions: deque[int] = deque()
        self.initial_rebalance_delay_s = initial_rebalance_delay_s
        self.joins: dict[str, int] = defaultdict(int)
        self._ids = itertools.count(1)
        self._expiry: asyncio.Task[None] | None = None
        self._client_id = ""

    async def start(self) -> FakeGroupBroker:
        await super().start()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_sessions())
        return self

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(BaseException):
                await self._expiry
        for group in self.groups.values():
            if group.rebalance is not None:
                group.rebalance.cancel()
        await super().stop()

    def group(self, group_id: str) -> _Group:
        if group_id not in self.groups:
            self.groups[group_id] = _Group(group_id)
        return self.groups[group_id]

    def assignments(self, group_id: str) -> dict[str, bytes]:
        return {m.member_id: m.assignment for m in self.group(group_id).members.values()}

    # ------------------------------------------------------------------ serving (awaits coroutines)
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        decoder = FrameDecoder()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for frame in decoder.feed(data):
                    header, body = decode_request(frame, supported=self.advertised)
                    self.requests.append((header.api_key, header.api_version))
                    self._client_id = header.client_id or ""
                    self._version = header.api_version
                    response = self._handle(header.api_key, body)
                    if inspect.isawaitable(response):
                        response = await response
                    if response in ("drop",):
                        writer.close()
                        return
                    if response is None or response == "hang":
                        continue
                    if header.api_key == 1 and not any(
                            len(p["records"]) for t in response["responses"] for p in t["partitions"]):
                        await asyncio.sleep(0.02)  # a short long-poll, so idle fetchers do not spin
                    if isinstance(response, tuple):
                        response = response[1]
                    writer.write(encode_response(header, header.api_key, header.api_version, response, framed=True))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _handle(self, api_key: int, body: dict[str, Any]) -> Any:
        handlers = {10: self._find_coordinator, 11: self._join, 14: self._sync, 12: self._heartbeat,
                    13: self._leave, 8: self._offset_commit, 9: self._offset_fetch, 16: self._list_groups,
                    15: self._describe_groups, 42: self._delete_groups}
        if api_key not in handlers:
            return super()._handle(api_key, body)
        injected = self.group_errors.get(api_key)
        if injected:
            return self._error_answer(api_key, body, injected.popleft())
        return handlers[api_key](body)

    def _error_answer(self, api_key: int, body: dict[str, Any], code: int) -> dict[str, Any]:
        if api_key == 10:
            return {"throttle_time_ms": 0, "error_code": code, "error_message": None, "node_id": -1, "host": "",
                    "port": -1, "coordinators": []}
        if api_key == 11:
            return {"throttle_time_ms": 0, "error_code": code, "generation_id": -1, "protocol_name": "",
                    "leader": "", "member_id": body["member_id"], "members": []}
        if api_key == 14:
            return {"throttle_time_ms": 0, "error_code": code, "assignment": b""}
        if api_key == 8:
            return {"throttle_time_ms": 0, "topics": [
                {"name": t["name"], "partitions": [{"partition_index": p["partition_index"], "error_code": code}
                                                   for p in t["partitions"]]} for t in body["topics"]]}
        if api_key == 9:
            return {"throttle_time_ms": 0, "error_code": code, "topics": []}
        return {"throttle_time_ms": 0, "error_code": code, "members": [], "groups": []}

    # ------------------------------------------------------------------ the group protocol
    def _find_coordinator(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"throttle_time_ms": 0, "error_code": 0, "error_message": None, "node_id": self.node_id,
                "host": "127.0.0.1", "port": self.port, "coordinators": [
                    {"key": k, "node_id": self.node_id, "host": "127.0.0.1", "port": self.port, "error_code": 0,
                     "error_message": None} for k in body.get("coordinator_keys") or []]}

    async def _join(self, body: dict[str, Any]) -> dict[str, Any]:
        group = self.group(body["group_id"])
        member_id = body["member_id"]
        loop = asyncio.get_running_loop()
        if not member_id:
            member_id = f"{self._client_id}-{next(self._ids)}"
            if self._version >= 4:
                group.pending.add(member_id)
                return {"throttle_time_ms": 0, "error_code": ErrorCode.MEMBER_ID_REQUIRED, "generation_id": -1,
                        "protocol_name": "", "leader": "", "member_id": member_id, "members": []}
        elif member_id not in group.members and member_id not in group.pending:
            return self._error_answer(11, body, ErrorCode.UNKNOWN_MEMBER_ID)
        group.pending.discard(member_id)
        self.joins[member_id] += 1
        member = group.members.get(member_id) or _Member(member_id, body.get("group_instance_id"), self._client_id)
        group.members[member_id] = member
        member.protocols = [(p["name"], p["metadata"]) for p in body["protocols"]]
        member.session_timeout_ms = body["session_timeout_ms"]
        member.rebalance_timeout_ms = body.get("rebalance_timeout_ms", -1)
        if member.rebalance_timeout_ms < 0:
            member.rebalance_timeout_ms = member.session_timeout_ms
        member.last_heartbeat = loop.time()
        group.protocol_type = body["protocol_type"]
        if member.join is not None and not member.join.done():
            member.join.cancel()
        member.join = loop.create_future()
        self._prepare_rebalance(group)
        return await member.join

    def _prepare_rebalance(self, group: _Group) -> None:
        if group.state == "CompletingRebalance":
            for m in group.members.values():
                if m.sync is not None and not m.sync.done():
                    m.sync.set_result({"throttle_time_ms": 0, "error_code": ErrorCode.REBALANCE_IN_PROGRESS,
                                       "assignment": b""})
        delay = self.initial_rebalance_delay_s if group.state == "Empty" else 0.0
        group.state = "PreparingRebalance"
        if group.rebalance is None or group.rebalance.done():
            group.rebalance = asyncio.get_running_loop().create_task(self._complete_join(group, delay))

    async def _complete_join(self, group: _Group, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        if delay_s:
            await asyncio.sleep(delay_s)  # group.initial.rebalance.delay.ms
        timeout_ms = max((m.rebalance_timeout_ms for m in group.members.values()), default=0)
        deadline = loop.time() + timeout_ms / 1000
        while loop.time() < deadline and any(m.join is None or m.join.done() for m in group.members.values()):
            await asyncio.sleep(0.01)  # the fake's own timer: wait for every member's JoinGroup
        for member_id, m in list(group.members.items()):
            if m.join is None or m.join.done():
                del group.members[member_id]  # did not rejoin within the rebalance timeout
        if not group.members:
            group.state = "Empty"
            return
        group.generation += 1
        names = [n for n, _ in next(iter(group.members.values())).protocols]
        group.protocol = next((n for n in names if all(n in dict(m.protocols) for m in group.members.values())),
                              None)
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = "CompletingRebalance"
        now = loop.time()
        for m in group.members.values():
            m.last_heartbeat = now
            m.sync = None
            members = [{"member_id": o.member_id, "group_instance_id": o.instance_id,
                        "metadata": dict(o.protocols)[group.protocol]} for o in group.members.values()] \
                if m.member_id == group.leader else []
            assert m.join is not None
            m.join.set_result({"throttle_time_ms": 0, "error_code": 0, "generation_id": group.generation,
                               "protocol_type": group.protocol_type, "protocol_name": group.protocol,
                               "leader": group.leader, "member_id": m.member_id, "members": members})

    def _check_member(self, group: _Group, member_id: str, generation: int) -> int:
        if member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation != group.generation:
            return ErrorCode.ILLEGAL_GENERATION
        return 0

    async def _sync(self, body: dict[str, Any]) -> dict[str, Any]:
        group = self.group(body["group_id"])
        code = self._check_member(group, body["member_id"], body["generation_id"])
        if not code and group.state == "PreparingRebalance":
            code = ErrorCode.REBALANCE_IN_PROGRESS
        if code:
            return {"throttle_time_ms": 0, "error_code": code, "assignment": b""}
        member = group.members[body["member_id"]]
        member.last_heartbeat = asyncio.get_running_loop().time()
        if group.state == "Stable":
            return {"throttle_time_ms": 0, "error_code": 0, "protocol_type": group.protocol_type,
                    "protocol_name": group.protocol, "assignment": member.assignment}
        member.sync = asyncio.get_running_loop().create_future()
        if body["member_id"] == group.leader:
            given = {a["member_id"]: a["assignment"] for a in body["assignments"]}
            for m in group.members.values():
                m.assignment = given.get(m.member_id, b"")
            group.state = "Stable"
            for m in group.members.values():
                if m.sync is not None and not m.sync.done():
                    m.sync.set_result({"throttle_time_ms": 0, "error_code": 0, "protocol_type": group.protocol_type,
                                       "protocol_name": group.protocol, "assignment": m.assignment})
        try:
            async with asyncio.timeout(SYNC_WAIT_S):
                return await member.sync
        except TimeoutError:
            return {"throttle_time_ms": 0, "error_code": ErrorCode.REBALANCE_IN_PROGRESS, "assignment": b""}

    def _heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        group = self.group(body["group_id"])
        code = self._check_member(group, body["member_id"], body["generation_id"])
        if not code:
            group.members[body["member_id"]].last_heartbeat = asyncio.get_running_loop().time()
            if group.state == "PreparingRebalance":
                code = ErrorCode.REBALANCE_IN_PROGRESS
        return {"throttle_time_ms": 0, "error_code": code}

    def _remove(self, group: _Group, member_id: str) -> None:
        member = group.members.pop(member_id, None)
        if member is None:
            return
        if member.join is not None and not member.join.done():
            member.join.cancel()
        if group.members:
            self._prepare_rebalance(group)
        else:
            group.state = "Empty"
            group.leader = ""

    def _leave(self, body: dict[str, Any]) -> dict[str, Any]:
        group = self.group(body["group_id"])
        ids = [m["member_id"] for m in body.get("members") or []] or [body.get("member_id", "")]
        results = []
        for member_id in ids:
            code = 0 if member_id in group.members else ErrorCode.UNKNOWN_MEMBER_ID
            self._remove(group, member_id)
            results.append({"member_id": member_id, "group_instance_id": None, "error_code": code})
        return {"throttle_time_ms": 0, "error_code": 0, "members": results}

    async def _expire_sessions(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.05)  # the fake coordinator's session timer tick
            now = loop.time()
            for group in self.groups.values():
                for member_id, m in list(group.members.items()):
                    waiting = m.join is not None and not m.join.done()
                    if not waiting and now - m.last_heartbeat > m.session_timeout_ms / 1000:
                        self._remove(group, member_id)

    def _offset_commit(self, body: dict[str, Any]) -> dict[str, Any]:
        group = self.group(body["group_id"])
        generation, member_id = body.get("generation_id_or_member_epoch", -1), body.get("member_id", "")
        if generation < 0 and not member_id:
            code = ErrorCode.UNKNOWN_MEMBER_ID if group.members else 0
        else:
            code = self._check_member(group, member_id, generation)
            if not code and group.state == "CompletingRebalance":
                code = ErrorCode.REBALANCE_IN_PROGRESS
        topics = []
        for t in body["topics"]:
            parts = []
            for p in t["partitions"]:
                pcode = code or (self.fail_next_commit_partitions.popleft() if self.fail_next_commit_partitions else 0)
                if not pcode:
                    group.offsets[(t["name"], p["partition_index"])] = p["committed_offset"]
                parts.append({"partition_index": p["partition_index"], "error_code": pcode})
            topics.append({"name": t["name"], "partitions": parts})
        return {"throttle_time_ms": 0, "topics": topics}

    def _offset_fetch(self, body: dict[str, Any]) -> dict[str, Any]:
        group = self.group(body["group_id"])
        wanted = body["topics"]
        if wanted is None:
            by_topic: dict[str, list[int]] = defaultdict(list)
            for (t, p) in sorted(group.offsets):
                by_topic[t].append(p)
            wanted = [{"name": t, "partition_indexes": ps} for t, ps in by_topic.items()]
        topics = [{"name": t["name"], "partitions": [
            {"partition_index": p, "committed_offset": group.offsets.get((t["name"], p), -1),
             "committed_leader_epoch": -1, "metadata": "", "error_code": 0} for p in t["partition_indexes"]]}
            for t in wanted]
        return {"throttle_time_ms": 0, "error_code": 0, "topics": topics}

    def _list_groups(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"throttle_time_ms": 0, "error_code": 0, "groups": [
            {"group_id": g.group_id, "protocol_type": g.protocol_type or "consumer", "group_state": g.state,
             "group_type": "classic"} for g in self.groups.values() if g.state != "Dead"]}

    def _describe_groups(self, body: dict[str, Any]) -> dict[str, Any]:
        out = []
        for group_id in body["groups"]:
            g = self.groups.get(group_id)
            if g is None or g.state == "Dead":
                out.append({"error_code": 0, "group_id": group_id, "group_state": "Dead", "protocol_type": "",
                            "protocol_data": "", "members": []})
                continue
            out.append({"error_code": 0, "group_id": group_id, "group_state": g.state,
                        "protocol_type": g.protocol_type, "protocol_data": g.protocol or "", "members": [
                            {"member_id": m.member_id, "group_instance_id": m.instance_id, "client_id": m.client_id,
                             "client_host": "/127.0.0.1", "member_metadata": dict(m.protocols).get(g.protocol or "",
                                                                                                 b""),
                             "member_assignment": m.assignment} for m in g.members.values()]})
        return {"throttle_time_ms": 0, "groups": out}

    def _delete_groups(self, body: dict[str, Any]) -> dict[str, Any]:
        results = []
        for group_id in body["groups_names"]:
            g = self.groups.get(group_id)
            if g is None:
                code = ErrorCode.GROUP_ID_NOT_FOUND
            elif g.members:
                code = ErrorCode.NON_EMPTY_GROUP
            else:
                code = 0
                del self.groups[group_id]
            results.append({"group_id": group_id, "error_code": code})
        return {"throttle_time_ms": 0, "results": results}
