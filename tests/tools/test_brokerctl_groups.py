"""`brokerctl groups list|describe|delete|reset-offsets` and `consume --group`, through click's
CliRunner, against the fake group coordinator of tests/client (client_fakegroup.py) running on an
event loop in a background thread (brokerd's coordinator is exercised by tests/interop)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "client"))

from client_fakegroup import FakeGroupBroker

from client import Consumer, Producer
from client.wire.messages import REQUESTS
from tools.brokerctl import main

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        async def cancel_the_rest() -> None:  # no pending task may outlive the loop (asyncio logs it later)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def fake() -> Iterator[tuple[LoopThread, FakeGroupBroker]]:
    thread = LoopThread()
    broker = thread.run(FakeGroupBroker({"t": 4}).start())
    yield thread, broker
    thread.run(broker.stop())
    thread.stop()


def cli(bootstrap: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["-b", bootstrap, *args], catch_exceptions=False)


async def _produce(bootstrap: str, per_partition: int) -> None:
    async with Producer(bootstrap, linger_ms=1) as producer:
        futures = [producer.send("t", b"v%d" % i, partition=p) for i in range(per_partition) for p in range(4)]
        await producer.flush()
        await asyncio.gather(*futures)


async def _member(bootstrap: str, count: int) -> Consumer:
    consumer = Consumer(bootstrap, group_id="g", auto_offset_reset="earliest", heartbeat_interval_ms=100,
                        client_id="member-a")
    await consumer.start()
    consumer.subscribe(["t"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    got = 0
    while got < count:
        assert loop.time() < deadline, f"{got} of {count} records"
        got += len(await consumer.poll(timeout_ms=100))
    await consumer.commit()
    return consumer


def test_groups_commands(fake: tuple[LoopThread, FakeGroupBroker]) -> None:
    thread, broker = fake
    bootstrap = broker.bootstrap
    thread.run(_produce(bootstrap, 3))
    member = thread.run(_member(bootstrap, 12))

    listed = cli(bootstrap, "groups", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == [{"group_id": "g", "state": "Stable", "protocol_type": "consumer"}]
    assert cli(bootstrap, "groups", "list").output == "g Stable consumer\n"

    described = cli(bootstrap, "groups", "describe", "g", "--json")
    assert described.exit_code == 0, described.output
    found = json.loads(described.output)
    member_id = found["members"][0]["member_id"]
    assert (found["state"], found["protocol"], found["coordinator"]) == ("Stable", "range", 1)
    assert found["members"][0]["client_id"] == "member-a"
    assert found["members"][0]["assignment"] == [{"topic": "t", "partition": p} for p in range(4)]
    assert found["offsets"] == [{"topic": "t", "partition": p, "committed_offset": 3, "log_end_offset": 3, "lag": 0,
                                 "member_id": member_id} for p in range(4)]
    text = cli(bootstrap, "groups", "describe", "g").output.splitlines()
    assert text[0] == "GROUP g STATE Stable PROTOCOL range COORDINATOR 1 MEMBERS 1"
    assert text[2] == f"t 0 3 3 0 {member_id} member-a"

    refused = cli(bootstrap, "groups", "reset-offsets", "g", "--topic", "t", "--to-earliest")
    assert refused.exit_code == 1 and "Stable" in refused.output and "stop its consumers" in refused.output

    thread.run(member.close())
    dry = cli(bootstrap, "groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "1", "--partition", "2",
              "--dry-run")
    assert dry.exit_code == 0 and "t 2 1" in dry.output
    assert broker.group("g").offsets[("t", 2)] == 3
    reset = cli(bootstrap, "groups", "reset-offsets", "g", "--topic", "t", "--to-earliest")
    assert reset.exit_code == 0, reset.output
    assert broker.group("g").offsets == {("t", p): 0 for p in range(4)}
    clamped = cli(bootstrap, "groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "99", "--partition", "1")
    assert clamped.exit_code == 0 and broker.group("g").offsets[("t", 1)] == 3
    usage = cli(bootstrap, "groups", "reset-offsets", "g", "--topic", "t")
    assert usage.exit_code == 2

    consumed = cli(bootstrap, "consume", "t", "--group", "g", "--max-messages", "9", "--timeout-ms", "10000")
    assert consumed.exit_code == 0, consumed.output
    assert sorted(consumed.stdout.split()) == sorted(["v0", "v1", "v2"] * 3)
    assert broker.group("g").offsets == {("t", p): 3 for p in range(4)}, "committed on stop"
    assert broker.group("g").state == "Empty", "left the group on stop"
    bad = cli(bootstrap, "consume", "t", "--group", "g", "--partition", "0")
    assert bad.exit_code == 2

    deleted = cli(bootstrap, "groups", "delete", "g")
    if 42 in REQUESTS:
        assert deleted.exit_code == 0 and deleted.output == "Deleted group g.\n"
        assert json.loads(cli(bootstrap, "groups", "list", "--json").output) == []
    else:  # the DeleteGroups schema is not in client/wire yet
        assert deleted.exit_code == 1 and "DeleteGroups" in deleted.output
