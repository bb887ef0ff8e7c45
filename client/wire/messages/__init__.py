"""The request and response schemas replog knows, one module per API, indexed by API key.

Each module defines `REQUEST` and `RESPONSE` (`schema.Message`) and documents the version
history from Kafka's schema comments. `REQUESTS[api_key]` / `RESPONSES[api_key]` are the
lookup tables protocol.py uses; `API_NAMES[api_key]` is Kafka's API name.

Version ranges are the union of Kafka 4.x's schemas (kafka-python 3.0.12 vendors them) and the
pre-4.0 schemas (apache/kafka trunk of Oct 2024), so every layout a client may send is parseable;
which versions are *advertised* is the broker's choice (KAFKA_PROTOCOL.md §1.4, §7).

| key | API                     | versions | flexible |
|-----|-------------------------|----------|----------|
| 0   | Produce                 | 0-13     | 9+       |
| 1   | Fetch                   | 0-18     | 12+      |
| 2   | ListOffsets             | 0-11     | 6+       |
| 3   | Metadata                | 0-13     | 9+       |
| 8   | OffsetCommit            | 0-10     | 8+       |
| 9   | OffsetFetch             | 0-10     | 6+       |
| 10  | FindCoordinator         | 0-6      | 3+       |
| 11  | JoinGroup               | 0-9      | 6+       |
| 12  | Heartbeat               | 0-4      | 4+       |
| 13  | LeaveGroup              | 0-5      | 4+       |
| 14  | SyncGroup               | 0-5      | 4+       |
| 15  | DescribeGroups          | 0-6      | 5+       |
| 16  | ListGroups              | 0-5      | 3+       |
| 18  | ApiVersions             | 0-4      | 3+       |
| 19  | CreateTopics            | 0-7      | 5+       |
| 20  | DeleteTopics            | 0-6      | 4+       |
| 21  | DeleteRecords           | 0-2      | 2+       |
| 22  | InitProducerId          | 0-6      | 2+       |
| 23  | OffsetForLeaderEpoch    | 0-4      | 4+       |
| 32  | DescribeConfigs         | 0-4      | 4+       |
| 42  | DeleteGroups            | 0-2      | 2+       |
| 44  | IncrementalAlterConfigs | 0-1      | 1+       |
| 55  | DescribeQuorum          | 0-2      | 0+       |
| 60  | DescribeCluster         | 0-2      | 0+       |
"""

from __future__ import annotations

from types import ModuleType

from client.wire.messages import (
    api_versions,
    create_topics,
    delete_groups,
    delete_records,
    delete_topics,
    describe_cluster,
    describe_configs,
    describe_groups,
    describe_quorum,
    fetch,
    find_coordinator,
    heartbeat,
    incremental_alter_configs,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_fetch,
    offset_for_leader_epoch,
    produce,
    sync_group,
)
from client.wire.schema import Message

__all__ = ["API_NAMES", "REQUESTS", "RESPONSES", "ApiKey", "compile_all"]


class ApiKey:
    """API key numbers (int16 on the wire), by Kafka's name."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    DESCRIBE_CONFIGS = 32
    DELETE_GROUPS = 42
    INCREMENTAL_ALTER_CONFIGS = 44
    DESCRIBE_QUORUM = 55
    DESCRIBE_CLUSTER = 60


_MODULES: tuple[ModuleType, ...] = (
    produce, fetch, list_offsets, metadata, offset_commit, offset_fetch, find_coordinator, join_group,
    heartbeat, leave_group, sync_group, describe_groups, list_groups, api_versions, create_topics,
    delete_topics, delete_records, init_producer_id, offset_for_leader_epoch, describe_configs,
    incremental_alter_configs, describe_quorum, describe_cluster, delete_groups,
)

REQUESTS: dict[int, Message] = {m.REQUEST.api_key: m.REQUEST for m in _MODULES}
RESPONSES: dict[int, Message] = {m.RESPONSE.api_key: m.RESPONSE for m in _MODULES}
API_NAMES: dict[int, str] = {key: msg.name.removesuffix("Request") for key, msg in REQUESTS.items()}

assert all(REQUESTS[k].valid_versions == RESPONSES[k].valid_versions for k in REQUESTS)
assert all(REQUESTS[k].flexible_versions == RESPONSES[k].flexible_versions for k in REQUESTS)


def compile_all() -> None:
    """Compile every codec now (a broker calls this at start-up so no request pays for it)."""
    for table in (REQUESTS, RESPONSES):
        for message in table.values():
            message.compile_all()
