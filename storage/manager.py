"""All partition logs of one data directory, and the directory-level state files.

Layout of a data directory::

    <topic>-<partition>/                       one Log each (storage/log.py)
    <topic>-<partition>.<token>-delete/        a log being deleted (finished on open)
    recovery-point-offset-checkpoint           topic partition offset   (everything below is fsynced)
    log-start-offset-checkpoint                topic partition offset
    replication-offset-checkpoint              topic partition offset   (high watermarks, from the broker)
    .clean-shutdown                            present only between a clean close and the next open

All state files are Kafka-format checkpoints written atomically (storage/checkpoint.py). The
clean-shutdown marker is written last on close, after every log is flushed and closed and every
checkpoint written; open removes it (durably) before any log can be appended to, so a later crash
is always recognised. With the marker, logs open without scanning data; without it, each log
scans from its checkpointed recovery point.

A log that fails to open or goes offline with an I/O error is reported in `offline` and the
manager keeps serving the others (the broker answers KAFKA_STORAGE_ERROR for it).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable

from storage.checkpoint import CheckpointError, read_checkpoint, write_atomic, write_checkpoint
from storage.errors import LogOfflineError, StorageError
from storage.files import FileSystem
from storage.log import Log, LogConfig

RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
HIGH_WATERMARK_CHECKPOINT = "replication-offset-checkpoint"
CLEAN_SHUTDOWN_MARKER = ".clean-shutdown"
DELETE_SUFFIX = "-delete"
TOPIC_NAME_BYTES_MAX = 249  # Kafka's limit

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


RESERVED_DIR_NAMES = frozenset({"__cluster_metadata-0"})  # the Raft metadata log (broker/cluster.py)


def log_dir_name(tp: TopicPartition) -> str:
    return f"{tp[0]}-{tp[1]}"


def parse_log_dir_name(name: str) -> TopicPartition | None:
    """'<topic>-<partition>' -> (topic, partition); None for anything else."""
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit() or len(topic) > TOPIC_NAME_BYTES_MAX:
        return None
    return topic, int(partition)


NAME_BYTES_MAX = 255  # a file name's limit on Linux file systems


def delete_dir_name(tp: TopicPartition) -> str:
    """'<topic>-<p>.<16 hex>-delete', the topic part cut so the name fits NAME_BYTES_MAX (as Kafka's
    LocalLog.logDeleteDirName does): a 249-character topic must stay deletable."""
    suffix = f"-{tp[1]}.{secrets.token_hex(8)}{DELETE_SUFFIX}"
    return tp[0][: NAME_BYTES_MAX - len(suffix)] + suffix


class LogManager:
    def __init__(self, data_dir: str, default_config: LogConfig | None = None, *, fs: FileSystem | None = None,
                 config_for: Callable[[str], LogConfig] | None = None) -> None:
        self.data_dir = data_dir
        self.fs = fs or FileSystem()
        self.default_config = default_config or LogConfig()
        self._config_for = config_for
        self.logs: dict[TopicPartition, Log] = {}
        self.offline: dict[TopicPartition, str] = {}
        self.clean_shutdown_on_open = False
        self.high_watermarks: dict[TopicPartition, int] = {}

    # ------------------------------------------------------------------ open
    @classmethod
    def open(cls, data_dir: str, default_config: LogConfig | None = None, *, fs: FileSystem | None = None,
             config_for: Callable[[str], LogConfig] | None = None) -> LogManager:
        manager = cls(data_dir, default_config, fs=fs, config_for=config_for)
        manager._open()
        return manager

    def config_for(self, topic: str) -> LogConfig:
        return self._config_for(topic) if self._config_for else self.default_config

    def _open(self) -> None:
        fs = self.fs
        fs.makedirs(self.data_dir)
        marker = os.path.join(self.data_dir, CLEAN_SHUTDOWN_MARKER)
        self.clean_shutdown_on_open = fs.exists(marker)
        recovery_points = self._read_offsets(RECOVERY_POINT_CHECKPOINT)
        start_offsets = self._read_offsets(LOG_START_OFFSET_CHECKPOINT)
        self.high_watermarks = self._read_offsets(HIGH_WATERMARK_CHECKPOINT)
        for name in fs.listdir(self.data_dir):
            path = os.path.join(self.data_dir, name)
            if name.endswith(DELETE_SUFFIX):
                fs.rmtree(path)
                continue
            tp = parse_log_dir_name(name)
            if tp is None or name in RESERVED_DIR_NAMES or not os.path.isdir(path):
                continue
            try:
                self.logs[tp] = Log.open(
                    path, self.config_for(tp[0]), fs=fs,
                    recovery_point=recovery_points.get(tp, 0),
                    log_start_offset=start_offsets.get(tp, 0),
                    clean_shutdown=self.clean_shutdown_on_open and tp in recovery_points)
            except (OSError, StorageError) as exc:
                log.error("log %s is offline: failed to open: %s", name, exc)
                self.offline[tp] = str(exc)
        if self.clean_shutdown_on_open:
            fs.remove(marker)
        fs.fsync_dir(self.data_dir)

    def _read_offsets(self, name: str) -> dict[TopicPartition, int]:
        path = os.path.join(self.data_dir, name)
        try:
            entries = read_checkpoint(self.fs, path, 3)
        except CheckpointError as exc:
            log.warning("ignoring corrupt %s: %s", name, exc)
            return {}
        result: dict[TopicPartition, int] = {}
        for topic, partition, offset in entries or []:
            try:
                result[(topic, int(partition))] = int(offset)
            except ValueError:
                log.warning("ignoring bad entry in %s", name)
        return result

    # ------------------------------------------------------------------ logs
    def get(self, tp: TopicPartition) -> Log | None:
        return self.logs.get(tp)

    def get_or_create(self, tp: TopicPartition, config: LogConfig | None = None) -> Log:
        existing = self.logs.get(tp)
        if existing is not None:
            return existing
        if tp in self.offline:
            raise LogOfflineError(f"log {log_dir_name(tp)} is offline: {self.offline[tp]}")
        path = os.path.join(self.data_dir, log_dir_name(tp))
        created = Log.open(path, config or self.config_for(tp[0]), fs=self.fs)
        self.fs.fsync_dir(self.data_dir)
        self.logs[tp] = created
        return created

    def delete(self, tp: TopicPartition) -> None:
        """Remove a log: rename its directory to `*-delete` (durable), then remove the files."""
        victim = self.logs.pop(tp, None)
        self.offline.pop(tp, None)
        self.high_watermarks.pop(tp, None)
        path = os.path.join(self.data_dir, log_dir_name(tp))
        if victim is not None:
            for segment in victim.segments:
                segment.close()
        if not self.fs.exists(path):
            return
        doomed = os.path.join(self.data_dir, delete_dir_name(tp))
        self.fs.rename(path, doomed)
        self.fs.fsync_dir(self.data_dir)
        self.fs.rmtree(doomed)

    def mark_offline(self, tp: TopicPartition, reason: str) -> None:
        if tp not in self.offline:
            log.error("log %s went offline: %s", log_dir_name(tp), reason)
        self.offline[tp] = reason

    def online_logs(self) -> Iterable[tuple[TopicPartition, Log]]:
        for tp, one in list(self.logs.items()):
            if one.offline:
                self.mark_offline(tp, "I/O error")
                continue
            yield tp, one

    # ------------------------------------------------------------------ periodic work
    def flush_due(self, now_ms: int) -> int:
        """Apply flush.ms to every log; returns how many were flushed."""
        flushed = 0
        for tp, one in self.online_logs():
            try:
                flushed += one.flush_if_due(now_ms)
            except LogOfflineError as exc:
                self.mark_offline(tp, str(exc))
        return flushed

    def apply_retention(self, now_ms: int, upper_bounds: dict[TopicPartition, int] | None = None) -> int:
        """Retention on every log, each bounded by its high watermark (default: its log end)."""
        deleted = 0
        for tp, one in self.online_logs():
            bound = one.log_end_offset if upper_bounds is None else upper_bounds.get(tp, one.log_start_offset)
            try:
                deleted += one.apply_retention(now_ms, bound)
            except LogOfflineError as exc:
                self.mark_offline(tp, str(exc))
        return deleted

    # ------------------------------------------------------------------ checkpoints
    def _write_offsets(self, name: str, offsets: dict[TopicPartition, int]) -> None:
        entries = [(t, p, o) for (t, p), o in sorted(offsets.items())]
        write_checkpoint(self.fs, os.path.join(self.data_dir, name), entries)

    def checkpoint_recovery_points(self) -> None:
        self._write_offsets(RECOVERY_POINT_CHECKPOINT, {tp: one.recovery_point for tp, one in self.online_logs()})

    def checkpoint_log_start_offsets(self) -> None:
        self._write_offsets(LOG_START_OFFSET_CHECKPOINT,
                            {tp: one.log_start_offset for tp, one in self.online_logs()})

    def checkpoint_high_watermarks(self, high_watermarks: dict[TopicPartition, int] | None = None) -> None:
        if high_watermarks is not None:
            self.high_watermarks.update(high_watermarks)
        self._write_offsets(HIGH_WATERMARK_CHECKPOINT,
                            {tp: hw for tp, hw in self.high_watermarks.items() if tp in self.logs})

    def checkpoint_all(self) -> None:
        self.checkpoint_recovery_points()
        self.checkpoint_log_start_offsets()
        self.checkpoint_high_watermarks()

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Flush and close every log, write the checkpoints, then the clean-shutdown marker.

        If any log could not be flushed the marker is not written: the next open recovers.
        """
        clean = not self.offline
        for tp, one in list(self.logs.items()):
            try:
                one.close()
            except LogOfflineError as exc:
                self.mark_offline(tp, str(exc))
                clean = False
            clean = clean and not one.offline
        self.checkpoint_all()
        if clean:
            write_atomic(self.fs, os.path.join(self.data_dir, CLEAN_SHUTDOWN_MARKER), b"clean\n")
