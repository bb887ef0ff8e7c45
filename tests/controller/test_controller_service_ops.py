"""ControllerService operations on a single-voter quorum, through ControllerClient (RPC key 1001).

Real sockets on 127.0.0.1 (free ports), real temp dirs; waits are conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from client.wire.errors import ErrorCode
from controller.controller_client import ControllerClient, ControllerError
from controller.controller_rpc import decode_response, encode_request
from controller.metadata import BuilderConfig, MetadataBuilder
from controller.node import RaftNode
from controller.service import ControllerService
from controller.session import ControllerTimings

TEST_TIMEOUT_S = 30.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def validate(name: str, value: str) -> str:
    if name == "retention.ms" and not value.lstrip("-").isdigit():
        raise ValueError(f"retention.ms must be an integer, not {value!r}")
    return value


async def single(tmp_path: Any) -> tuple[ControllerService, ControllerClient]:
    port = free_port()
    voters = {1: ("127.0.0.1", port)}
    node = RaftNode(1, voters, str(tmp_path / "c1"), listen=voters[1], rng_seed=1)
    service = ControllerService(node, MetadataBuilder(config=BuilderConfig(producer_id_block_size=100),
                                                      rng=random.Random(1)), validate_config=validate)
    await service.start()
    await wait_until(lambda: service.is_active, 5, "activation")
    return service, ControllerClient(voters, rng=random.Random(7))


def test_operations_end_to_end(tmp_path: Any) -> None:
    async def main() -> None:
        service, client = await single(tmp_path)
        try:
            inc = uuid.uuid4().bytes
            reg = await client.register_broker(1, inc, "127.0.0.1", 9092)
            assert reg["error_code"] == 0
            epoch = reg["broker_epoch"]
            again = await client.register_broker(1, inc, "127.0.0.1", 9092)
            assert again == reg, "a retried registration is idempotent"
            other = await client.register_broker(1, uuid.uuid4().bytes, "127.0.0.1", 9092)
            assert other["error_code"] == ErrorCode.DUPLICATE_BROKER_REGISTRATION  # live session
            hb = await client.heartbeat(1, epoch, -1)
            assert hb["error_code"] == 0 and not hb["is_caught_up"] and hb["is_fenced"] and hb["lease_ms"] == 0
            hb = await client.heartbeat(1, epoch, service.image.offset)
            assert hb["is_caught_up"] and not hb["is_fenced"] and hb["lease_ms"] == 1000
            assert client.lease_valid()
            stale = await client.heartbeat(1, epoch + 1, service.image.offset)
            assert stale["error_code"] == ErrorCode.STALE_BROKER_EPOCH

            # two concurrent creates of one name: serialized writes see each other
            a, b = await asyncio.gather(client.create_topics([{"name": "t", "num_partitions": 2}]),
                                        ControllerClient(client.voters).create_topics([{"name": "t"}]))
            codes = sorted([a["topics"][0]["error_code"], b["topics"][0]["error_code"]])
            assert codes == [ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS]
            bad = await client.create_topics([{"name": "u", "configs": {"retention.ms": "soon"}}])
            assert bad["topics"][0]["error_code"] == ErrorCode.INVALID_CONFIG
            ok = await client.alter_configs({"t": {"retention.ms": "1000"}})
            assert ok["topics"][0]["error_code"] == 0
            assert dict(service.image.topic("t").configs) == {"retention.ms": "1000"}

            topic = service.image.topic("t")
            tid = topic.topic_id
            part = service.image.partition(tid, 0)
            ap = await client.alter_partition(1, epoch, [{"topic_id": tid.hex(), "partition": 0,
                                                          "leader_epoch": part.leader_epoch,
                                                          "partition_epoch": part.partition_epoch,
                                                          "new_isr": [[1, epoch]]}])
            assert ap["error_code"] == 0 and ap["partitions"][0]["error_code"] == 0  # same ISR: no record
            el = await client.elect_preferred_leaders([(tid, 0)])
            assert el["partitions"][0]["error_code"] == ErrorCode.ELECTION_NOT_NEEDED

            p1 = await client.allocate_producer_ids(1, epoch)
            p2 = await client.allocate_producer_ids(1, epoch)
            assert (p1["error_code"], p2["error_code"]) == (0, 0)
            assert p2["first_producer_id"] == p1["first_producer_id"] + p1["size"] == 100

            gone = await client.delete_topics(["t", "nope"])
            assert [t["error_code"] for t in gone["topics"]] == [0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
            assert service.image.topic("t") is None

            with pytest.raises(ControllerError) as err:
                await client.call("heartbeat", {"broker_id": "one"})
            assert err.value.code == ErrorCode.INVALID_REQUEST
            with pytest.raises(ControllerError):
                await client.call("no_such_op", {})
            await client.close()
        finally:
            await service.stop()

    run(main())


def test_restart_rebuilds_the_image_from_log_and_snapshot(tmp_path: Any) -> None:
    async def main() -> None:
        service, client = await single(tmp_path)
        reg = await client.register_broker(1, uuid.uuid4().bytes, "h", 1)
        await client.heartbeat(1, reg["broker_epoch"], service.image.offset)
        await client.create_topics([{"name": f"t{i}", "num_partitions": 3} for i in range(5)])
        service.node.compact(service.node.applied_index, service.image_snapshot())
        await client.create_topics([{"name": "after-snapshot"}])
        before = service.image
        await client.close()
        await service.stop()

        node = RaftNode(1, service.node.voters, str(tmp_path / "c1"), listen=service.node.voters[1], rng_seed=2)
        again = ControllerService(node, MetadataBuilder())
        await again.start()
        try:
            await wait_until(lambda: again.image == before, 5, "replay")
            assert again.image.offset == before.offset
        finally:
            await again.stop()

    run(main())


def test_timings_inequalities_are_asserted() -> None:
    ControllerTimings()
    with pytest.raises(AssertionError):
        ControllerTimings(broker_session_ms=1200)        # < lease + worst round trip
    with pytest.raises(AssertionError):
        ControllerTimings(connection_grace_ms=150)       # < heartbeat interval
    with pytest.raises(AssertionError):
        ControllerTimings(broker_lease_ms=500, broker_session_ms=1500, connection_grace_ms=300)  # < 3 heartbeats


def test_follower_answers_not_controller_raw(tmp_path: Any) -> None:
    """A non-leader (here: a voter of a 2-voter quorum whose peer is down) answers NOT_CONTROLLER."""
    async def main() -> None:
        ports = [free_port(), free_port()]
        voters = {1: ("127.0.0.1", ports[0]), 2: ("127.0.0.1", ports[1])}
        node = RaftNode(1, voters, str(tmp_path / "c1"), listen=voters[1], rng_seed=1)
        service = ControllerService(node, MetadataBuilder())
        await service.start()
        try:
            reader, writer = await asyncio.open_connection(*voters[1])
            writer.write(encode_request("create_topics", {"topics": [{"name": "x"}]}, 5, "test"))
            size = int.from_bytes(await reader.readexactly(4), "big")
            cid, code, leader, payload = decode_response(await reader.readexactly(size))
            assert (cid, code, leader, payload) == (5, ErrorCode.NOT_CONTROLLER, None, {})
            writer.close()
        finally:
            await service.stop()

    run(main())
