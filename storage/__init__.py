"""replog storage: segmented partition logs of Kafka record batches v2 (see storage/log.py)."""

from storage.errors import (
    CorruptRecordError,
    InvalidRecordError,
    LogOfflineError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
)
from storage.files import FaultyFileSystem, FileSystem
from storage.log import Log, LogChunk, LogConfig

__all__ = [
    "CorruptRecordError",
    "FaultyFileSystem",
    "FileSystem",
    "InvalidRecordError",
    "Log",
    "LogChunk",
    "LogConfig",
    "LogOfflineError",
    "OffsetOutOfRangeError",
    "RecordTooLargeError",
    "StorageError",
]
