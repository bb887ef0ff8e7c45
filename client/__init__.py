"""replog's Python client: an asyncio Producer, Consumer and Admin speaking the Kafka protocol.

    from client import Producer, Consumer, Admin

`client.wire` is the sans-IO protocol layer everything (broker, storage, tools) shares; the rest of
this package builds on it and on nothing else in the project (ARCHITECTURE.md §2). `client.sync`
wraps the three clients for synchronous scripts. See docs/client.md.

The names below are imported lazily (PEP 562), so `import client.wire...` from the broker or
storage does not load the asyncio client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Admin": "client.admin", "ClusterDescription": "client.admin", "ConfigEntry": "client.admin",
    "NewTopic": "client.admin", "PartitionDescription": "client.admin", "TopicDescription": "client.admin",
    "Consumer": "client.consumer", "Producer": "client.producer",
    "ConsumerRecord": "client.record", "RecordMetadata": "client.record",
    "BrokerResponseError": "client.errors", "BufferFullError": "client.errors", "ClientClosedError": "client.errors",
    "DeliveryError": "client.errors", "KafkaConnectionError": "client.errors", "KafkaError": "client.errors",
    "KafkaTimeoutError": "client.errors", "NotAppendedError": "client.errors", "UnknownOutcomeError": "client.errors",
}

__all__ = [
    "Admin", "BrokerResponseError", "BufferFullError", "ClientClosedError", "ClusterDescription", "ConfigEntry",
    "Consumer", "ConsumerRecord", "DeliveryError", "KafkaConnectionError", "KafkaError", "KafkaTimeoutError",
    "NewTopic", "NotAppendedError", "PartitionDescription", "Producer", "RecordMetadata", "TopicDescription",
    "UnknownOutcomeError",
]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:
    from client.admin import Admin, ClusterDescription, ConfigEntry, NewTopic, PartitionDescription, TopicDescription
    from client.consumer import Consumer
    from client.errors import (
        BrokerResponseError,
        BufferFullError,
        ClientClosedError,
        DeliveryError,
        KafkaConnectionError,
        KafkaError,
        KafkaTimeoutError,
        NotAppendedError,
        UnknownOutcomeError,
    )
    from client.producer import Producer
    from client.record import ConsumerRecord, RecordMetadata


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
