"""replog's group consumer against the fake coordinator (client_fakegroup.py): assignment split,
commit and resume, rebalance callbacks, the reaction to each coordinator error, session expiry,
max_poll_interval_ms, pattern subscriptions, fatal errors, and the floor protocol versions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from client_fakegroup import GROUP_ADVERTISED, FakeGroupBroker

from client import Consumer, ConsumerRecord, Producer
from client.errors import ClientError
from client.group.errors import CommitFailedError, GroupFatalError
from client.wire.errors import ErrorCode

FAST = {"heartbeat_interval_ms": 50, "session_timeout_ms": 6_000, "auto_offset_reset": "earliest",
        "retry_backoff_ms": 20, "retry_backoff_max_ms": 200, "fetch_max_wait_ms": 100}


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"{what} not reached within {timeout_s} s"
        await asyncio.sleep(0.01)  # polling a condition with a deadline


class Member:
    """A consumer polled in the background; records land in `records`."""

    def __init__(self, bootstrap: str, group: str = "g", **config: Any) -> None:
        self.consumer = Consumer(bootstrap, group_id=group, **{**FAST, **config})
        self.records: list[ConsumerRecord] = []
        self.events: list[tuple[str, list[tuple[str, int]]]] = []
        self.error: BaseException | None = None
        self.polling = True
        self._task: asyncio.Task[None] | None = None

    async def start(self, topics: list[str] | None = None, pattern: str | None = None) -> Member:
        await self.consumer.start()
        self.consumer.subscribe(topics, pattern=pattern,
                                on_partitions_revoked=lambda ps: self.events.append(("revoked", sorted(ps))),
                                on_partitions_assigned=lambda ps: self.events.append(("assigned", sorted(ps))),
                                on_partitions_lost=lambda ps: self.events.append(("lost", sorted(ps))))
        self._task = asyncio.get_running_loop().create_task(self._poll())
        return self

    async def _poll(self) -> None:
        while True:
            if not self.polling:
                await asyncio.sleep(0.01)
                continue
            try:
                self.records += await self.consumer.poll(timeout_ms=50)
            except Exception as exc:
                self.error = exc
                return

    async def stop_polling(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def close(self) -> None:
        await self.stop_polling()
        await self.consumer.close()


async def _produce(bootstrap: str, topic: str, partitions: int, per_partition: int, start: int = 0) -> None:
    async with Producer(bootstrap, linger_ms=1) as producer:
        futures = [producer.send(topic, b"%d-%d" % (p, i), partition=p)
                   for i in range(start, start + per_partition) for p in range(partitions)]
        await producer.flush()
        await asyncio.gather(*futures)


def _run(body: Callable[[FakeGroupBroker], Any], topics: dict[str, int] | None = None, **broker: Any) -> None:
    async def main() -> None:
        fake = await FakeGroupBroker(topics or {"t": 4}, **broker).start()
        try:
            async with asyncio.timeout(60):
                await body(fake)
        finally:
            await fake.stop()
    asyncio.run(main())


def test_two_members_split_the_partitions_and_a_new_member_resumes_after_the_commits() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        await _produce(fake.bootstrap, "t", 4, 10)
        a, b = Member(fake.bootstrap), Member(fake.bootstrap)
        await a.start(["t"])
        await b.start(["t"])
        await _until(lambda: len(a.records) + len(b.records) >= 40 and a.consumer.assignment()
                     and b.consumer.assignment(), what="40 records over two members")
        assert not a.consumer.assignment() & b.consumer.assignment()
        assert a.consumer.assignment() | b.consumer.assignment() == {("t", p) for p in range(4)}
        offsets = [(r.partition, r.offset) for r in a.records + b.records]
        assert len(offsets) == 40 and len(set(offsets)) == 40, "no record twice: the split has no overlap"
        await a.close()
        await b.close()
        assert fake.group("g").offsets == {("t", p): 10 for p in range(4)}, "auto commit on close"
        assert fake.group("g").state == "Empty", "LeaveGroup on close"
        await _produce(fake.bootstrap, "t", 4, 3, start=10)
        c = await Member(fake.bootstrap).start(["t"])
        await _until(lambda: len(c.records) >= 12, what="the new member's 12 records")
        assert sorted((r.partition, r.offset) for r in c.records) == [(p, o) for p in range(4) for o in range(10, 13)]
        await c.close()

    _run(body)


def test_rebalance_callbacks_when_members_come_and_go() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        all_tps = [("t", p) for p in range(4)]
        a = await Member(fake.bootstrap).start(["t"])
        await _until(lambda: ("assigned", all_tps) in a.events, what="a owns all four")
        b = await Member(fake.bootstrap, partition_assignment_strategy=("roundrobin", "range")).start(["t"])
        await _until(lambda: len(b.consumer.assignment()) == 2 and len(a.consumer.assignment()) == 2,
                     what="two each")
        assert a.events[:2] == [("assigned", all_tps), ("revoked", all_tps)]
        assert fake.group("g").protocol == "range", "the protocol both offer, in the first member's order"
        await b.close()
        await _until(lambda: len(a.consumer.assignment()) == 4, what="a owns all four again")
        assert a.events[-1] == ("assigned", all_tps) and a.events[-2][0] == "revoked"
        await a.close()
        assert a.events[-1] == ("revoked", all_tps)

    _run(body)


def test_coordinator_errors_rediscover_retry_and_rejoin() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        await _produce(fake.bootstrap, "t", 4, 5)
        fake.group_errors[10].extend([ErrorCode.COORDINATOR_NOT_AVAILABLE] * 2)
        fake.group_errors[11].append(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        fake.group_errors[14].append(ErrorCode.NOT_COORDINATOR)
        a = await Member(fake.bootstrap).start(["t"])
        await _until(lambda: len(a.records) >= 20, what="records despite the errors")
        member_id = a.consumer._group.membership.member_id
        assert fake.count(10) >= 4, "FindCoordinator retried, and again after NOT_COORDINATOR"
        finds = fake.count(10)
        fake.group_errors[12].append(ErrorCode.NOT_COORDINATOR)
        await _until(lambda: fake.count(10) > finds, what="rediscovery after a heartbeat's NOT_COORDINATOR")
        assert a.consumer._group.membership.member_id == member_id, "NOT_COORDINATOR keeps the membership"
        fake.group_errors[12].append(ErrorCode.UNKNOWN_MEMBER_ID)
        await _until(lambda: any(e[0] == "lost" for e in a.events) and a.consumer.assignment(),
                     what="a new membership after UNKNOWN_MEMBER_ID")
        assert a.consumer._group.membership.member_id != member_id
        assert not any(e[0] == "revoked" for e in a.events), "lost partitions are not revoked (nor committed)"
        fake.group_errors[12].append(ErrorCode.REBALANCE_IN_PROGRESS)
        joins = sum(fake.joins.values())
        await _until(lambda: sum(fake.joins.values()) > joins and a.events[-1][0] == "assigned", what="a rejoin")
        assert a.events[-2][0] == "revoked"
        assert a.error is None
        await a.close()

    _run(body)


def test_a_silent_member_is_evicted_and_its_partitions_move() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        a = await Member(fake.bootstrap, session_timeout_ms=1_000).start(["t"])
        b = await Member(fake.bootstrap, session_timeout_ms=1_000).start(["t"])
        await _until(lambda: len(a.consumer.assignment()) == 2 and len(b.consumer.assignment()) == 2)
        await b.stop_polling()  # b goes silent, as a killed process: no poll, no heartbeat, no LeaveGroup
        group_task = b.consumer._group._task
        assert group_task is not None
        group_task.cancel()
        b.consumer._group._drop_coordinator()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _until(lambda: len(a.consumer.assignment()) == 4, timeout_s=5, what="a takes b's partitions")
        assert loop.time() - started < 1.0 + 0.05 + 2
        await b.close()
        await a.close()

    _run(body)


def test_commit_committed_and_commit_failures() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        a = await Member(fake.bootstrap, enable_auto_commit=False).start(["t"])
        await _until(lambda: len(a.consumer.assignment()) == 4 and a.consumer._group.stable)
        await a.consumer.commit({("t", 1): 5})
        assert await a.consumer.committed(("t", 1)) == 5
        assert await a.consumer.committed(("t", 2)) is None
        fake.fail_next_commit_partitions.append(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        await a.consumer.commit({("t", 1): 6})
        assert fake.group("g").offsets[("t", 1)] == 6, "a retriable partition error is retried"
        fake.group_errors[8].append(ErrorCode.ILLEGAL_GENERATION)
        with pytest.raises(CommitFailedError):
            await a.consumer.commit({("t", 1): 7})
        await _until(lambda: a.events[-1][0] == "assigned" and a.consumer._group.stable, what="rejoined")
        assert ("lost", [("t", p) for p in range(4)]) in a.events
        await _until(lambda: len(a.consumer._group_positions()) == 4, what="positions after the rejoin")
        await a.consumer.commit()  # the positions: t-1 resumed at its committed 6, the rest reset to earliest
        assert fake.group("g").offsets == {("t", 0): 0, ("t", 1): 6, ("t", 2): 0, ("t", 3): 0}
        fake.group("g").offsets.clear()
        await a.close()
        assert fake.group("g").offsets == {}, "no commit on close when auto commit is off"

    _run(body)


def test_auto_commit_commits_the_positions_of_the_previous_poll() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        await _produce(fake.bootstrap, "t", 4, 5)
        a = await Member(fake.bootstrap, auto_commit_interval_ms=50).start(["t"])
        await _until(lambda: fake.group("g").offsets == {("t", p): 5 for p in range(4)}, what="auto commit")
        await a.close()

    _run(body)


def test_pattern_subscription_and_exclusive_modes() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        a = await Member(fake.bootstrap).start(pattern=r"p-.*")
        await _until(lambda: len(a.consumer.assignment()) == 3, what="pattern assignment")
        assert a.consumer.assignment() == {("p-a", 0), ("p-b", 0), ("p-b", 1)}
        assert a.consumer.subscription() == {"p-a", "p-b"}
        with pytest.raises(ClientError):
            a.consumer.assign([("t", 0)])
        await a.close()
        async with Consumer(fake.bootstrap) as plain:
            with pytest.raises(ClientError):
                plain.subscribe(["t"])

    _run(body, topics={"p-a": 1, "p-b": 2, "other": 1, "xp-a": 1})


def test_an_inconsistent_protocol_is_raised_from_poll() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        fake.group_errors[11].append(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        a = await Member(fake.bootstrap).start(["t"])
        await _until(lambda: a.error is not None, what="the fatal error")
        assert isinstance(a.error, GroupFatalError) and a.error.code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        await a.close()

    _run(body)


def test_max_poll_interval_leaves_the_group_and_the_next_poll_rejoins() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        a = await Member(fake.bootstrap, max_poll_interval_ms=300).start(["t"])
        await _until(lambda: len(a.consumer.assignment()) == 4)
        a.polling = False
        await _until(lambda: not fake.group("g").members, what="LeaveGroup after max_poll_interval_ms")
        assert a.consumer.assignment() == set()
        a.polling = True
        await _until(lambda: len(a.consumer.assignment()) == 4, what="rejoin at the next poll")
        await a.close()

    _run(body)


def test_floor_protocol_versions() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        await _produce(fake.bootstrap, "t", 4, 2)
        a = await Member(fake.bootstrap).start(["t"])
        b = await Member(fake.bootstrap).start(["t"])
        await _until(lambda: len(a.records) + len(b.records) >= 8 and a.consumer.assignment()
                     and b.consumer.assignment())
        await a.close()
        await b.close()
        assert fake.group("g").offsets == {("t", p): 2 for p in range(4)}
        used = {key: version for key, version in fake.requests if key in (8, 9, 10, 11, 12, 13, 14)}
        assert {8, 9, 10, 11, 13, 14} <= set(used) and all(used[k] == floor[k][0] for k in used)

    floor = {**GROUP_ADVERTISED, 8: (2, 2), 9: (1, 1), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 0), 14: (0, 0)}
    _run(body, advertised=floor)


def test_unsubscribe_commits_leaves_and_allows_assign() -> None:
    async def body(fake: FakeGroupBroker) -> None:
        await _produce(fake.bootstrap, "t", 4, 2)
        a = await Member(fake.bootstrap).start(["t"])
        await _until(lambda: len(a.records) >= 8, what="8 records")
        await a.stop_polling()
        await a.consumer.poll(timeout_ms=0)  # the positions snapshot a commit on revoke uses
        a.consumer.unsubscribe()
        assert a.consumer.assignment() == set() and a.consumer.subscription() == set()
        await _until(lambda: fake.group("g").state == "Empty", what="LeaveGroup after unsubscribe")
        assert a.events[-1] == ("revoked", [("t", p) for p in range(4)])
        assert fake.group("g").offsets == {("t", p): 2 for p in range(4)}, "committed before revoking"
        a.consumer.assign([("t", 0)])
        a.consumer.seek(("t", 0), 0)
        got = await a.consumer.poll(timeout_ms=5_000)
        assert got and got[0].offset == 0 and a.consumer.assignment() == {("t", 0)}
        await a.consumer.commit({("t", 0): 1})  # a simple-group commit: the group has no members now
        assert fake.group("g").offsets[("t", 0)] == 1
        await a.close()

    _run(body)
