"""The broker process's composition root: data directory, logs, topics, partitions, listener, timers.

Start order: lock the data dir (flock) -> check/create meta.properties -> load topics -> open the
LogManager (recovery) -> one Partition per topic partition (orphan logs of deleted topics are
removed) -> start the listener -> background work. Stop order is the reverse; `LogManager.close`
flushes every log and writes the clean-shutdown marker last.

Background work, each on its own interval and each bounded per run: retention
(`log.retention.check.interval.ms`), flush.ms, recovery-point and high-watermark checkpoints
(Kafka's 60 s / 5 s), and the log cleaner in slices (a few ms each, then a yield to the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import time
from collections.abc import Callable, Coroutine
from typing import Any

from broker import loop_lag
from broker.cluster import ImageTopicStore, QuorumMetadata
from broker.config import BrokerConfig
from broker.groups.coordinator import GroupCoordinator
from broker.identity import DataDirLock, ensure_identity
from broker.partition import Partition
from broker.producer_ids import ProducerIdAllocator
from broker.replication import ReplicaManager
from broker.server import ApiSpec, Server
from broker.tasks import cancel_and_wait
from broker.topic_store import LocalTopicStore, TopicError, TopicInfo
from client.wire.errors import ErrorCode
from storage import LogConfig
from storage.compaction import LogCleaner
from storage.files import FileSystem
from storage.manager import LogManager
from storage.producer_state import PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS

log = logging.getLogger(__name__)

RECOVERY_POINT_CHECKPOINT_INTERVAL_MS = 60_000  # log.flush.offset.checkpoint.interval.ms
HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS = 5_000   # replica.high.watermark.checkpoint.interval.ms
FLUSH_CHECK_INTERVAL_MS = 1_000
CLEANER_BACKOFF_MS = 15_000                     # log.cleaner.backoff.ms
CLEANER_SLICES_PER_PASS_MAX = 100_000  # a bound on one pass; each slice is a few ms

FDS_PER_PARTITION = 3  # .log, .index, .timeindex of the active segment
FD_RESERVE = 64        # listener, data-dir lock, checkpoints being written, logging

TopicPartition = tuple[str, int]


def _fsync_all(files: list[Any]) -> None:
    """Worker-thread fsync of rolled segment files; a file closed meanwhile (retention, compaction,
    topic deletion) has nothing left to make durable."""
    for f in files:
        if f.closed:
            continue
        try:
            f.fsync()
        except (OSError, ValueError) as exc:  # os.fsync(-1) is a ValueError: closed between check and call
            if not f.closed or (isinstance(exc, OSError) and exc.errno != errno.EBADF):
                raise


def now_ms() -> int:
    return int(time.time() * 1000)


class Broker:
    def __init__(self, config: BrokerConfig, fs: FileSystem | None = None) -> None:
        self.config = config
        self.fs = fs  # the storage I/O seam; tests pass a FaultyFileSystem
        self.node_id: int = config.node_id
        self.data_dir = os.path.abspath(config.data_dir)
        self.cluster_id = ""
        self.lock = DataDirLock(self.data_dir)
        self.quorum: QuorumMetadata | None = None
        self.topics: LocalTopicStore | ImageTopicStore = LocalTopicStore(self.data_dir)
        if config.metadata_quorum:  # metadata from the Raft quorum (broker/cluster.py)
            self.quorum = QuorumMetadata(self)
            self.topics = ImageTopicStore(self.quorum)
        self.producer_ids = ProducerIdAllocator(self.data_dir)
        self.logs: LogManager | None = None
        self.partitions: dict[TopicPartition, Partition] = {}  # every hosted replica, leader or follower
        self.replication = ReplicaManager(self)
        # called with a Partition whenever this broker starts or stops leading it (or drops it);
        # e.g. the group coordinator loads or unloads the groups of a __consumer_offsets partition
        self.role_listeners: list[Callable[[Partition], None]] = []
        self.groups = GroupCoordinator(self)  # consumer groups (broker/groups/); a role listener
        self.server: Server | None = None
        self.host = ""
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.cleaner = LogCleaner()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, apis: dict[int, ApiSpec] | None = None) -> None:
        from broker.handlers import build_apis

        os.makedirs(self.data_dir, exist_ok=True)
        self.lock.acquire()
        try:
            self.cluster_id = ensure_identity(self.data_dir, self.node_id)
            self.topics.load()
            if self.quorum is None:
                self.producer_ids.load()
            self.logs = LogManager.open(self.data_dir, self.config.log_config(), fs=self.fs,
                                        config_for=self.log_config_for)
            if self.quorum is None:
                self._load_partitions()
            else:
                await self.quorum.start_controller()
                # the quorum's cluster id, recorded in meta.properties before serving anything
                self.cluster_id = await self.quorum.confirm_cluster_id()
            self.server = Server(apis or build_apis(self), max_frame_bytes=self.config.socket_request_max_bytes,
                                 max_connections=self.config.max_connections)
            host, port = self.config.listen.rsplit(":", 1)
            self.host, self.port = await self.server.start(host, int(port))
            if self.quorum is not None:
                # served once registered and unfenced: the image then holds our registration
                await self.quorum.register(*self.advertised_host_port)
                await self.quorum.migrate_local_metadata()
                self.replication.start()
                self.quorum.follow()
        except BaseException:
            if self.server is not None:
                with contextlib.suppress(Exception):
                    await self.server.stop()
            if self.quorum is not None:
                with contextlib.suppress(Exception):
                    await self.quorum.stop()
            if self.logs is not None:
                self.logs.close()
            self.lock.release()
            raise
        self._start_timers()
        await self.groups.start()

    async def stop(self, controlled: bool = True) -> None:
        """Stop; `controlled`: first hand leaderships to other brokers (controlled shutdown)."""
        if controlled and self.quorum is not None and self.server is not None:
            try:
                await self.quorum.controlled_shutdown()
            except Exception:
                log.exception("controlled shutdown failed")
        await cancel_and_wait(self._tasks)
        await self.groups.stop()
        await self.replication.stop()
        if self.server is not None:
            await self.server.stop()
        if self.quorum is not None:
            await self.quorum.stop()
        if self.logs is not None:
            self.logs.checkpoint_high_watermarks(self.high_watermarks())
            self.logs.close()
        self.lock.release()

    @property
    def advertised_host_port(self) -> tuple[str, int]:
        advertised = self.config.advertised
        if advertised:
            host, port = advertised.rsplit(":", 1)
            return host, int(port)
        return self.host, self.port

    # ------------------------------------------------------------------ topics and partitions
    def log_config_for(self, topic: str) -> LogConfig:
        info = self.topics.get(topic)
        return self.config.log_config(info.configs if info else None)

    def _load_partitions(self) -> None:
        assert self.logs is not None
        wanted = {(t.name, p) for t in self.topics.all() for p in range(t.partitions)}
        for tp in list(self.logs.logs):
            if tp not in wanted:  # a topic deleted while the broker was down or mid-delete
                self.logs.delete(tp)
        for info in self.topics.all():
            self._open_partitions(info)

    def _open_partitions(self, info: TopicInfo) -> None:
        assert self.logs is not None
        config = self.log_config_for(info.name)
        for index in range(info.partitions):
            tp = (info.name, index)
            if tp in self.partitions:
                continue
            log_ = self.logs.get_or_create(tp, config)
            log_.defer_roll_flush = True  # rolled segments are fsynced in a worker thread (_flush_due)
            self.partitions[tp] = Partition(info.name, index, log_, leader_epoch=0, local_id=self.node_id)
            # single node: ISR = {self}, so everything in the log is committed (the checkpointed
            # high watermark matters once there are followers)

    def create_topic(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> TopicInfo:
        self._check_fd_budget(partitions)
        info = self.topics.create(name, partitions, replication_factor, configs)
        self._open_partitions(info)
        return info

    def check_fd_budget(self, partitions: int) -> None:
        self._check_fd_budget(partitions)

    def _check_fd_budget(self, partitions: int) -> None:
        """Refuse a topic whose logs would not fit the process's file-descriptor limit: running out
        half-way would leave a topic that cannot be opened, and a broker that cannot restart."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return
        in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
        needed = partitions * FDS_PER_PARTITION + FD_RESERVE + self.config.max_connections // 10
        if in_use + needed > soft:
            raise TopicError(ErrorCode.POLICY_VIOLATION,
                             f"{partitions} partitions need ~{needed} file descriptors; {soft - in_use} are left "
                             f"(raise the open-files limit, ulimit -n)")

    def delete_topic(self, name: str) -> TopicInfo:
        assert self.logs is not None
        info = self.topics.delete(name)
        for index in range(info.partitions):
            partition = self.partitions.pop((name, index), None)
            if partition is not None:
                partition.fail_waiters()
            self.logs.delete((name, index))
        return info

    def reconfigure_topic(self, name: str) -> None:
        config = self.log_config_for(name)
        for (topic, _), partition in self.partitions.items():
            if topic == name:
                partition.log.config = config

    def may_lead(self) -> bool:
        """Leader-only actions check this: in quorum mode the controller lease must be valid."""
        return self.quorum is None or self.quorum.may_lead()

    def lease_left_s(self) -> float | None:
        """Seconds until the controller lease ends (None: no lease applies, e.g. a one-voter quorum)."""
        if self.quorum is None or set(self.quorum.voters) == {self.node_id}:
            return None
        return self.quorum.client.lease_deadline - asyncio.get_running_loop().time()

    def role_changed(self, partition: Partition) -> None:
        for listener in list(self.role_listeners):
            try:
                listener(partition)
            except Exception:
                log.exception("role listener failed for %s-%d", partition.topic, partition.index)

    def min_insync_replicas(self, topic: str) -> int:
        info = self.topics.get(topic)
        raw = info.configs.get("min.insync.replicas") if info is not None else None
        return int(raw) if raw is not None else int(self.config.min_insync_replicas)

    def producer_id_was_issued(self, producer_id: int) -> bool:
        if self.quorum is not None:  # every block the controller allocated lies below next_producer_id
            return 0 <= producer_id < self.quorum.image.next_producer_id
        return self.producer_ids.was_issued(producer_id)

    def not_leader_error(self, topic: str, index: int) -> int:
        """The error for a partition this broker does not (or may not) lead now."""
        if self.quorum is None:
            partition = self.partitions.get((topic, index))
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if partition is None else ErrorCode.NOT_LEADER_OR_FOLLOWER
        info = self.quorum.image.topic(topic)
        if info is None or not 0 <= index < info.partition_count:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        return ErrorCode.NOT_LEADER_OR_FOLLOWER

    def high_watermarks(self) -> dict[TopicPartition, int]:
        return {tp: p.high_watermark for tp, p in self.partitions.items()}

    # ------------------------------------------------------------------ background work
    def _start_timers(self) -> None:
        self._every(self.config.log_retention_check_interval_ms, self._retention)
        self._every(FLUSH_CHECK_INTERVAL_MS, self._flush_due)
        self._every(RECOVERY_POINT_CHECKPOINT_INTERVAL_MS, self._checkpoint_recovery_points)
        self._every(HIGH_WATERMARK_CHECKPOINT_INTERVAL_MS, self._checkpoint_high_watermarks)
        self._every(CLEANER_BACKOFF_MS, self._clean)
        self._every(PRODUCER_ID_EXPIRATION_CHECK_INTERVAL_MS, self._expire_producer_ids)
        self._tasks.append(loop_lag.start(busy=lambda: self.cleaner.task is not None))  # broker/loop_lag.py

    def _every(self, interval_ms: int, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_ms / 1000)
                try:
                    await work()
                except Exception:
                    log.exception("background task %s failed", work.__name__)
        self._tasks.append(asyncio.create_task(loop(), name=work.__name__))

    async def _retention(self) -> None:
        assert self.logs is not None
        deleted = self.logs.apply_retention(now_ms(), self.high_watermarks())
        if deleted:
            log.info("retention deleted %d segments", deleted)
            self.logs.checkpoint_log_start_offsets()

    async def _flush_due(self) -> None:
        assert self.logs is not None
        self.logs.flush_due(now_ms())
        for tp, partition in list(self.partitions.items()):
            pending = partition.log.pending_roll_flush()
            if pending is None:
                continue
            files, offset = pending
            try:
                await asyncio.to_thread(_fsync_all, files)
            except OSError as exc:
                partition.log.offline = True
                self.logs.mark_offline(tp, f"fsync of a rolled segment failed: {exc}")
                continue
            partition.log.complete_roll_flush(offset)

    async def _checkpoint_recovery_points(self) -> None:
        assert self.logs is not None
        self.logs.checkpoint_recovery_points()
        self.logs.checkpoint_log_start_offsets()

    async def _checkpoint_high_watermarks(self) -> None:
        assert self.logs is not None
        self.logs.checkpoint_high_watermarks(self.high_watermarks())

    async def _expire_producer_ids(self) -> None:
        now = now_ms()
        for partition in self.partitions.values():
            partition.log.producer_state.remove_expired(now, self.config.producer_id_expiration_ms)

    async def _clean(self) -> None:
        """Run at most one compaction pass, in slices, yielding to the event loop between slices."""
        for _ in range(CLEANER_SLICES_PER_PASS_MAX):
            candidates = [(p.log, p.high_watermark) for p in self.partitions.values()
                          if p.log.config.compact and not p.log.offline]
            if not candidates:
                return
            result = self.cleaner.step(candidates, now_ms())
            if self.cleaner.task is None:  # the pass ended (result) or nothing is due (None)
                if result is not None:
                    log.info("cleaned %s: %s", result.log_path if hasattr(result, "log_path") else "a log", result)
                return
            await asyncio.sleep(0)
