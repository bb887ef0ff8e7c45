"""Storage errors, each carrying the Kafka error code the broker answers with.

A bug is an assertion; these are operational outcomes a caller maps to a response.
"""

from __future__ import annotations


class StorageError(Exception):
    error_code = -1  # UNKNOWN_SERVER_ERROR


class OffsetOutOfRangeError(StorageError):
    error_code = 1  # OFFSET_OUT_OF_RANGE


class CorruptRecordError(StorageError):
    error_code = 2  # CORRUPT_MESSAGE


class RecordTooLargeError(StorageError):
    error_code = 10  # MESSAGE_TOO_LARGE


class LogOfflineError(StorageError):
    """A write or fsync failed: the log refuses all further work until reopened."""

    error_code = 56  # KAFKA_STORAGE_ERROR


class InvalidRecordError(StorageError):
    error_code = 87  # INVALID_RECORD
