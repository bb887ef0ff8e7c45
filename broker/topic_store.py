"""Topic metadata of a single-node broker, behind the interface the Raft controller will take over.

`TopicStore` is that interface: create / delete / alter configs / look up. `LocalTopicStore` keeps
it in one JSON file (`topics.json` in the data directory, written atomically with orjson) — the
whole of the metadata a single node needs until the controller issue replaces it with the
replicated metadata log. Topic ids are random UUIDs (16 bytes) as in Kafka.

Name rules are Kafka's: 1-249 characters of [a-zA-Z0-9._-], not "." or "..".
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from client.wire.errors import ErrorCode
from storage.checkpoint import write_atomic
from storage.files import FileSystem

TOPICS_FILE = "topics.json"
TOPIC_NAME_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
PARTITIONS_MAX = 10_000  # per topic: a bound on what one request can make the broker create
TOPICS_MAX = 10_000


class TopicError(Exception):
    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


@dataclass
class TopicInfo:
    name: str
    topic_id: bytes
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def validate_topic_name(name: str | None) -> None:
    if not name or not TOPIC_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"invalid topic name {name!r}")


class TopicStore(Protocol):
    def get(self, name: str) -> TopicInfo | None: ...
    def all(self) -> list[TopicInfo]: ...
    def create(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> TopicInfo: ...
    def delete(self, name: str) -> TopicInfo: ...
    def alter_configs(self, name: str, configs: dict[str, str | None]) -> TopicInfo: ...


class LocalTopicStore:
    def __init__(self, data_dir: str, fs: FileSystem | None = None) -> None:
        self.path = os.path.join(data_dir, TOPICS_FILE)
        self.fs = fs or FileSystem()
        self.topics: dict[str, TopicInfo] = {}

    def load(self) -> None:
        if not self.fs.exists(self.path):
            return
        doc = orjson.loads(self.fs.read_file(self.path))
        for item in doc.get("topics", []):
            info = TopicInfo(item["name"], bytes.fromhex(item["topic_id"]), int(item["partitions"]),
                             int(item["replication_factor"]), dict(item.get("configs", {})))
            self.topics[info.name] = info

    def _save(self) -> None:
        doc = {"version": 1, "topics": [
            {"name": t.name, "topic_id": t.topic_id.hex(), "partitions": t.partitions,
             "replication_factor": t.replication_factor, "configs": t.configs}
            for t in sorted(self.topics.values(), key=lambda t: t.name)]}
        write_atomic(self.fs, self.path, orjson.dumps(doc, option=orjson.OPT_INDENT_2))

    def get(self, name: str) -> TopicInfo | None:
        return self.topics.get(name)

    def by_id(self, topic_id: bytes) -> TopicInfo | None:
        return next((t for t in self.topics.values() if t.topic_id == topic_id), None)

    def all(self) -> list[TopicInfo]:
        return sorted(self.topics.values(), key=lambda t: t.name)

    def create(self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]) -> TopicInfo:
        validate_topic_name(name)
        if name in self.topics:
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        if len(self.topics) >= TOPICS_MAX:
            raise TopicError(ErrorCode.POLICY_VIOLATION, f"at most {TOPICS_MAX} topics")
        if not 1 <= partitions <= PARTITIONS_MAX:
            raise TopicError(ErrorCode.INVALID_PARTITIONS, f"partitions must be in 1..{PARTITIONS_MAX}")
        info = TopicInfo(name, uuid.uuid4().bytes, partitions, replication_factor, dict(configs))
        self.topics[name] = info
        self._save()
        return info

    def delete(self, name: str) -> TopicInfo:
        info = self.topics.pop(name, None)
        if info is None:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        self._save()
        return info

    def alter_configs(self, name: str, configs: dict[str, str | None]) -> TopicInfo:
        info = self.topics.get(name)
        if info is None:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        for key, value in configs.items():
            if value is None:
                info.configs.pop(key, None)
            else:
                info.configs[key] = value
        self._save()
        return info
