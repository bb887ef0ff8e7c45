"""Metadata from the Raft quorum (`metadata.quorum.enable`, `brokerd --quorum`): the broker side of the
controller issue.

The process runs a `RaftNode` (data in `<data_dir>/__cluster_metadata-0/`; a voter when the node has
the controller role, else an observer) and a `ControllerService` attached to it, so every node applies
every committed entry to its own `MetadataImage`. The broker half:

* waits until its image has the cluster id (appended by the first active controller) and records it
  in meta.properties, refusing a data directory confirmed for another cluster (broker/identity.py);
* registers through a `ControllerClient` (incarnation: a fresh uuid per process start), then
  heartbeats every 200 ms (broker_heartbeat_interval_ms) with the offset of its image; startup waits
  until it is unfenced, which implies its image holds everything up to its own registration;
* serves reads from the committed image (`ImageTopicStore`, TopicStore-compatible) and sends admin
  writes to the active controller (`create_topics` / `delete_topics` / `alter_configs`), then waits
  until its own image shows the result, so a client reading back from the same broker sees it;
* hosts a log for every partition whose replicas include it, leads it (broker.partitions) while the
  image names it leader (leader epoch from the image) and its lease is valid (`may_lead`);
* records each partition directory's topic id (`partition.metadata`, as Kafka): a directory whose
  topic id is not the image's is deleted, so a re-created topic never reuses old data;
* takes producer ids from controller-allocated blocks (allocate_producer_ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from broker.config import ConfigError, validate_topic_config
from broker.identity import confirm_cluster_id
from broker.partition import Partition
from broker.tasks import cancel_and_wait
from broker.topic_store import TopicError, TopicInfo
from client.wire.errors import ErrorCode
from controller.controller_client import ControllerClient, ControllerError, ControllerUnavailableError
from controller.metadata import BuilderConfig, MetadataBuilder, MetadataImage, PartitionRegistration, TopicImage
from controller.node import RaftNode, RaftNodeConfig
from controller.service import ControllerService

if TYPE_CHECKING:
    from broker.broker import Broker

log = logging.getLogger(__name__)

METADATA_DIR = "__cluster_metadata-0"
PARTITION_METADATA_FILE = "partition.metadata"
STARTUP_TIMEOUT_S = 30.0
IMAGE_WAIT_S = 5.0
STARTUP_HEARTBEAT_S = 0.02   # heartbeat pace until unfenced
CONTROLLED_SHUTDOWN_TIMEOUT_S = 10.0
METADATA_SNAPSHOT_ENTRIES = 20_000


def _validate_config(name: str, value: str) -> str:
    try:
        return validate_topic_config(name, value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def topic_info(topic: TopicImage) -> TopicInfo:
    return TopicInfo(topic.name, topic.topic_id, topic.partition_count, topic.replication_factor,
                     dict(topic.configs))


class ImageTopicStore:
    """The read half of `TopicStore` over the committed image; writes go through QuorumMetadata."""

    def __init__(self, quorum: QuorumMetadata) -> None:
        self.quorum = quorum

    def load(self) -> None:
        pass

    def get(self, name: str) -> TopicInfo | None:
        topic = self.quorum.image.topic(name) if name else None
        return None if topic is None else topic_info(topic)

    def by_id(self, topic_id: bytes) -> TopicInfo | None:
        topic = self.quorum.image.topic_by_id(topic_id)
        return None if topic is None else topic_info(topic)

    def all(self) -> list[TopicInfo]:
        image = self.quorum.image
        return [topic_info(image.topics[image.topic_ids[n]]) for n in sorted(image.topic_ids)]

    def create(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> TopicInfo:
        raise TopicError(ErrorCode.UNKNOWN_SERVER_ERROR, "quorum mode: create topics through the controller")

    def delete(self, name: str) -> TopicInfo:
        raise TopicError(ErrorCode.UNKNOWN_SERVER_ERROR, "quorum mode: delete topics through the controller")

    def alter_configs(self, name: str, configs: dict[str, str | None]) -> TopicInfo:
        raise TopicError(ErrorCode.UNKNOWN_SERVER_ERROR, "quorum mode: alter configs through the controller")


class QuorumMetadata:
    def __init__(self, broker: Broker) -> None:
        config = broker.config
        self.broker = broker
        self.node_id = broker.node_id
        self.voters = config.voter_map
        self.is_controller = "controller" in config.roles.split(",")
        host, port = config.controller_listen.rsplit(":", 1)
        # the metadata log is compacted into an image snapshot every METADATA_SNAPSHOT_ENTRIES
        # applied entries (lease-barrier no-ops alone add ~4 entries/s to an idle log)
        self.node = RaftNode(self.node_id, self.voters, os.path.join(broker.data_dir, METADATA_DIR),
                             listen=(host, int(port)),
                             config=RaftNodeConfig(snapshot_interval_entries=METADATA_SNAPSHOT_ENTRIES))
        builder = MetadataBuilder(config=BuilderConfig(default_partitions=config.num_partitions,
                                                       default_replication_factor=config.default_replication_factor))
        self.service = ControllerService(self.node, builder, validate_config=_validate_config)
        self.client = ControllerClient(self.voters, client_id=f"broker-{self.node_id}")
        self.incarnation_id = uuid.uuid4().bytes
        self.broker_epoch = -1
        self.fenced = True
        self._tasks: list[asyncio.Task[None]] = []
        self._pid_next = 0
        self._pid_end = 0
        self._pid_lock = asyncio.Lock()
        self._applied_image: MetadataImage | None = None

    @property
    def image(self) -> MetadataImage:
        return self.service.image

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start_controller(self) -> None:
        self.service.expect_local_broker(self.node_id)
        await self.service.start()
        if self.node_id in self.voters and self.node.address is not None and self.voters[self.node_id][1] == 0:
            self.client.voters[self.node_id] = self.node.address  # --controller-listen HOST:0 (tests)

    async def confirm_cluster_id(self) -> str:
        """Wait until the image has the cluster id (the first active controller appends it), then record it
        in meta.properties; IdentityError if the data directory is confirmed for another cluster."""
        try:
            await self.node.wait_for(lambda: self.image.cluster_id is not None, STARTUP_TIMEOUT_S)
        except TimeoutError:
            raise TimeoutError(f"broker {self.node_id}: no cluster id from the metadata quorum in time") from None
        cluster_id = self.image.cluster_id
        assert cluster_id is not None
        confirm_cluster_id(self.broker.data_dir, self.node_id, cluster_id)
        return cluster_id

    async def register(self, host: str, port: int) -> None:
        """Register, then heartbeat until unfenced (the image then holds our registration)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT_S
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"broker {self.node_id}: registration not accepted in time")
            reply = await self.client.register_broker(self.node_id, self.incarnation_id, host, port,
                                                      deadline_s=remaining)
            if reply.get("error_code") == ErrorCode.NONE:
                self.broker_epoch = int(reply["broker_epoch"])
                break
            log.info("registration refused (%s), retrying", reply.get("message") or reply.get("error_code"))
            await asyncio.sleep(0.1)
        while self.fenced:
            if loop.time() > deadline:
                raise TimeoutError(f"broker {self.node_id}: not unfenced in time")
            await self._heartbeat_once()
            if self.fenced:
                await asyncio.sleep(STARTUP_HEARTBEAT_S)
        self._tasks.append(loop.create_task(self._heartbeat_loop(), name="broker-heartbeat"))

    def follow(self) -> None:
        """Serve from the image: apply it now and on every change from here on."""
        self.apply_image()
        self._tasks.append(asyncio.get_running_loop().create_task(self._follow_image(), name="broker-image"))

    async def migrate_local_metadata(self) -> None:
        """A data directory last served in local mode (`topics.json`): its topics are created through
        the controller (same names, partitions and configs; replication factor 1), its partition
        directories get the new topic ids, and producer-id blocks are skipped past the ids it issued
        — so switching to the quorum keeps the data. Idempotent until `topics.json` is renamed to
        `topics.json.migrated` at the end (a crash half-way redoes only what is missing)."""
        from broker.producer_ids import PRODUCER_ID_FILE
        from broker.topic_store import TOPICS_FILE, LocalTopicStore

        path = os.path.join(self.broker.data_dir, TOPICS_FILE)
        if not os.path.exists(path):
            return
        local = LocalTopicStore(self.broker.data_dir)
        local.load()
        missing = [t for t in local.all() if self.image.topic(t.name) is None]
        if missing:
            results = await self.create_topics([{"name": t.name, "num_partitions": t.partitions,
                                                 "replication_factor": 1, "configs": t.configs} for t in missing],
                                               apply=False)
            failed = [r for r in results if r["error_code"] not in (0, ErrorCode.TOPIC_ALREADY_EXISTS)]
            if failed:
                raise RuntimeError(f"migrating topics.json to the quorum failed: {failed}")
        for info in local.all():
            topic = self.image.topic(info.name)
            if topic is None:
                continue
            for index in range(min(info.partitions, topic.partition_count)):
                tp = (info.name, index)
                if os.path.isdir(os.path.dirname(self._meta_path(tp))):
                    self._write_topic_id(tp, topic.topic_id)
        pid_path = os.path.join(self.broker.data_dir, PRODUCER_ID_FILE)
        if os.path.exists(pid_path):
            with open(pid_path, encoding="ascii") as f:
                reserved = int(f.read().strip() or 0)
            for _ in range(reserved // max(1, self.image.next_producer_id or 1) + reserved // 1000 + 2):
                if self.image.next_producer_id >= reserved:
                    break
                self._pid_next = self._pid_end = 0
                await self.allocate_producer_id()
                await self._wait_image(lambda image: image.next_producer_id >= self._pid_end, apply=False)
            self._pid_next = self._pid_end = 0  # the skipped blocks are never handed out
        os.replace(path, path + ".migrated")
        log.info("migrated %d local topics to the metadata quorum", len(local.all()))

    async def controlled_shutdown(self, timeout_s: float = CONTROLLED_SHUTDOWN_TIMEOUT_S) -> bool:
        """Ask the active controller to move this broker's leaderships away and take it out of every
        ISR (a heartbeat with want_shutdown), and wait until it says so or `timeout_s` passes. Called
        while the listener and the replica fetchers still run, so no acknowledged write is cut off."""
        if self.fenced or self.broker_epoch < 0:
            return True
        if not any(b != self.node_id and self.image.is_active(b) for b in self.image.brokers):
            return True  # no other broker could take over: nothing to hand off
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                reply = await self.client.heartbeat(self.node_id, self.broker_epoch, self.image.offset,
                                                    want_shutdown=True, deadline_s=max(0.1, deadline - loop.time()))
            except (ControllerUnavailableError, ControllerError, OSError) as exc:
                log.info("controlled shutdown: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if reply.get("error_code") == ErrorCode.NONE and reply.get("should_shut_down"):
                # wait until our own image shows no leadership here (clients are redirected)
                with contextlib.suppress(TimeoutError):
                    await self.node.wait_for(lambda: not any(
                        p.leader == self.node_id for _t, _i, p in self.image.iter_partitions()),
                        max(0.05, deadline - loop.time()))
                log.info("controlled shutdown: leaderships moved away")
                return True
            await asyncio.sleep(0.05)
        log.warning("controlled shutdown did not complete within %.1f s", timeout_s)
        return False

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        with contextlib.suppress(Exception):
            await self.client.close()
        await self.service.stop()

    async def _heartbeat_once(self) -> None:
        try:
            reply = await self.client.heartbeat(self.node_id, self.broker_epoch, self.image.offset,
                                                deadline_s=1.0)
        except (ControllerUnavailableError, ControllerError, OSError) as exc:
            log.debug("heartbeat failed: %s", exc)
            return
        if reply.get("error_code") == ErrorCode.NONE:
            self.fenced = bool(reply.get("is_fenced", True))
        elif reply.get("error_code") in (ErrorCode.STALE_BROKER_EPOCH, ErrorCode.BROKER_ID_NOT_REGISTERED):
            log.warning("heartbeat refused (%s): registering again", ErrorCode(reply["error_code"]).name)
            host, port = self.broker.advertised_host_port
            reg = await self.client.register_broker(self.node_id, self.incarnation_id, host, port)
            if reg.get("error_code") == ErrorCode.NONE:
                self.broker_epoch = int(reg["broker_epoch"])

    async def _heartbeat_loop(self) -> None:
        interval = self.service.timings.broker_heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat_once()
            except Exception:
                log.exception("heartbeat failed")

    async def _follow_image(self) -> None:
        while True:
            changed = self.node.changed
            if self.image is not self._applied_image and not self._only_offset_moved(self.image):
                try:
                    self.apply_image()
                    await self.broker.replication.prune()
                except Exception:
                    log.exception("applying the metadata image failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.5)

    def _only_offset_moved(self, image: MetadataImage) -> bool:
        """The image differs from the applied one only by its offset (a no-op entry): nothing to do.
        MetadataImage shares unchanged mappings between versions, so identity is enough."""
        applied = self._applied_image
        return (applied is not None and image._brokers is applied._brokers and image._topics is applied._topics
                and image.next_producer_id == applied.next_producer_id and image.cluster_id == applied.cluster_id)

    def replication_factor(self, topic: str) -> int:
        info = self.image.topic(topic)
        return 1 if info is None else info.replication_factor

    def may_lead(self) -> bool:
        """A leader-only action needs a valid lease; a one-voter quorum whose only controller is this
        process has no other broker that could take over, so it only needs to be unfenced."""
        if set(self.voters) == {self.node_id}:
            return not self.fenced
        return self.client.lease_valid() and not self.fenced

    # -- partitions from the image -------------------------------------------------------------------------

    def apply_image(self) -> None:
        """Make the hosted replicas match the current image (idempotent): a log for every partition
        whose replicas include this broker; leader where the image names it (leader epoch, ISR and
        partition epoch from the image), follower of the image's leader otherwise."""
        image = self.image
        self._applied_image = image
        broker = self.broker
        logs = broker.logs
        assert logs is not None
        wanted: dict[tuple[str, int], tuple[TopicImage, PartitionRegistration]] = {}
        for topic, index, part in image.iter_partitions():
            if self.node_id in part.replicas:
                wanted[(topic.name, index)] = (topic, part)
        for tp in list(logs.logs):
            item = wanted.get(tp)
            # a directory of another (deleted, re-created) topic, or without a recorded topic id
            if item is None or self._dir_topic_id(tp) != item[0].topic_id:
                self._drop(tp)
        for tp in list(broker.partitions):
            if tp not in wanted:
                self._drop(tp)
        now = int(time.time() * 1000)
        for tp, (topic, part) in wanted.items():
            config = broker.config.log_config(dict(topic.configs))
            try:
                log_ = logs.get_or_create(tp, config)
            except Exception as exc:
                log.error("cannot open %s-%d: %s", tp[0], tp[1], exc)
                continue
            self._write_topic_id(tp, topic.topic_id)
            if log_.config != config:
                log_.config = config
            log_.defer_roll_flush = True
            partition = broker.partitions.get(tp)
            if partition is None or partition.log is not log_:
                partition = Partition(tp[0], tp[1], log_, part.leader_epoch, local_id=self.node_id,
                                      high_watermark=logs.high_watermarks.get(tp, 0), leader=False)
                broker.partitions[tp] = partition
            if part.leader == self.node_id:
                if partition.make_leader(part.leader_epoch, part.partition_epoch, part.replicas, part.isr, now):
                    log.info("%s-%d: leader in epoch %d, ISR %s, log end %d, high watermark %d", tp[0], tp[1],
                             part.leader_epoch, list(part.isr), log_.log_end_offset, partition.high_watermark)
                    broker.role_changed(partition)
                broker.replication.unfollow(tp)
            else:
                if partition.make_follower(part.leader, part.leader_epoch, part.partition_epoch, part.replicas,
                                           part.isr):
                    log.info("%s-%d: follower of %d in epoch %d, log end %d", tp[0], tp[1], part.leader,
                             part.leader_epoch, log_.log_end_offset)
                    broker.role_changed(partition)
                broker.replication.follow(partition, part.leader, self._address(image, part.leader))

    @staticmethod
    def _address(image: MetadataImage, broker_id: int) -> tuple[str, int] | None:
        reg = image.brokers.get(broker_id)
        if reg is None or reg.fenced or not reg.listeners:
            return None
        listener = reg.listeners[0]
        return listener.host, listener.port

    def _drop(self, tp: tuple[str, int]) -> None:
        broker = self.broker
        assert broker.logs is not None
        partition = broker.partitions.pop(tp, None)
        if partition is not None:
            partition.fail_waiters()
            partition.leader_state = None  # listeners see a partition that is led here no longer
            broker.role_changed(partition)
        broker.replication.unfollow(tp)
        broker.logs.delete(tp)

    def _meta_path(self, tp: tuple[str, int]) -> str:
        from storage.manager import log_dir_name
        return os.path.join(self.broker.data_dir, log_dir_name(tp), PARTITION_METADATA_FILE)

    def _dir_topic_id(self, tp: tuple[str, int]) -> bytes | None:
        try:
            with open(self._meta_path(tp), encoding="ascii") as f:
                for line in f:
                    key, _, value = line.strip().partition(": ")
                    if key == "topic_id":
                        return uuid.UUID(value).bytes
        except (OSError, ValueError):
            return None
        return None

    def _write_topic_id(self, tp: tuple[str, int], topic_id: bytes) -> None:
        path = self._meta_path(tp)
        if os.path.exists(path):
            return
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"version: 0\ntopic_id: {uuid.UUID(bytes=topic_id)}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # -- admin writes through the active controller -------------------------------------------------------

    async def _wait_image(self, predicate: Any, apply: bool = True) -> None:
        with contextlib.suppress(TimeoutError):
            await self.node.wait_for(lambda: predicate(self.image), IMAGE_WAIT_S)
        if apply:
            self.apply_image()

    async def create_topics(self, topics: list[dict[str, Any]], validate_only: bool = False,
                            apply: bool = True) -> list[dict[str, Any]]:
        """topics: [{name, num_partitions, replication_factor, configs}] -> [{name, error_code, message}]."""
        try:
            reply = await self.client.create_topics(topics, validate_only)
        except (ControllerUnavailableError, ControllerError) as exc:
            return [{"name": t["name"], "error_code": ErrorCode.REQUEST_TIMED_OUT, "message": str(exc)}
                    for t in topics]
        results = reply["topics"]
        created = {r["name"]: bytes.fromhex(r["topic_id"]) for r in results
                   if r["error_code"] == ErrorCode.NONE and r.get("topic_id") and not validate_only}
        if created:
            await self._wait_image(lambda image: all(image.topic_ids.get(n) == i for n, i in created.items()), apply)
        return results

    async def delete_topics(self, names: list[str]) -> list[dict[str, Any]]:
        try:
            reply = await self.client.delete_topics(names)
        except (ControllerUnavailableError, ControllerError) as exc:
            return [{"name": n, "error_code": ErrorCode.REQUEST_TIMED_OUT, "message": str(exc)} for n in names]
        results = reply["topics"]
        gone = {r["topic_id"] for r in results if r["error_code"] == ErrorCode.NONE and r.get("topic_id")}
        if gone:
            await self._wait_image(lambda image: all(bytes.fromhex(t) not in image.topics for t in gone))
        return results

    async def alter_configs(self, name: str, changes: dict[str, str | None],
                            validate_only: bool = False) -> tuple[int, str | None]:
        try:
            reply = await self.client.alter_configs({name: changes}, validate_only)
        except (ControllerUnavailableError, ControllerError) as exc:
            return ErrorCode.REQUEST_TIMED_OUT, str(exc)
        result = reply["topics"][0]
        if result["error_code"] == ErrorCode.NONE and not validate_only:
            def done(image: MetadataImage) -> bool:
                topic = image.topic(name)
                return topic is None or all(topic.configs.get(k) == v for k, v in changes.items())
            await self._wait_image(done)
        return result["error_code"], result.get("message") or None

    async def allocate_producer_id(self) -> int:
        async with self._pid_lock:
            if self._pid_next >= self._pid_end:
                reply = await self.client.allocate_producer_ids(self.node_id, self.broker_epoch)
                if reply.get("error_code") != ErrorCode.NONE:
                    raise ControllerError(int(reply.get("error_code", -1)), reply)
                self._pid_next = int(reply["first_producer_id"])
                self._pid_end = self._pid_next + int(reply["size"])
            producer_id = self._pid_next
            self._pid_next += 1
            return producer_id
