"""Request handlers, one module per API (or per pair of closely related APIs), and the advertised table.

Advertise exactly what is implemented and tested with the real clients (KAFKA_PROTOCOL.md §1.4,
"nonflex" plus the leader-epoch versions, Fetch up to v12 without topic ids, ApiVersions up to v3):
a client picks the highest version both sides support, so every version in a range is served.
Produce advertises 0-8 but answers v0-2 with UNSUPPORTED_VERSION, as Kafka 4 does (librdkafka
< 2.11.1 compresses only if Produce v0 is advertised).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.server import ApiSpec

if TYPE_CHECKING:
    from broker.broker import Broker


# An error_message that quotes a request string (a topic name, a config value: up to 32767 bytes)
# must still fit the response's string field; longer messages are cut and end in "...".
ERROR_MESSAGE_CHARS_MAX = 1024


def clip_message(message: str | None) -> str | None:
    if message is None or len(message) <= ERROR_MESSAGE_CHARS_MAX:
        return message
    return message[:ERROR_MESSAGE_CHARS_MAX] + "..."


def build_apis(broker: Broker) -> dict[int, ApiSpec]:
    from broker.handlers import api_versions, configs, coordinator, fetch, metadata, offsets, produce, topics

    apis: dict[int, ApiSpec] = {
        0: ApiSpec(0, 8, produce.handler(broker)),
        1: ApiSpec(4, 12, fetch.handler(broker)),
        2: ApiSpec(1, 5, offsets.list_offsets_handler(broker)),
        3: ApiSpec(4, 9, metadata.handler(broker)),
        10: ApiSpec(0, 2, coordinator.find_coordinator_handler(broker)),
        19: ApiSpec(2, 4, topics.create_topics_handler(broker)),
        20: ApiSpec(1, 3, topics.delete_topics_handler(broker)),
        22: ApiSpec(0, 1, coordinator.init_producer_id_handler(broker)),
        23: ApiSpec(2, 3, offsets.offset_for_leader_epoch_handler(broker)),
        32: ApiSpec(1, 3, configs.describe_configs_handler(broker)),
        44: ApiSpec(0, 0, configs.incremental_alter_configs_handler(broker)),
    }
    from broker.handlers import groups
    groups.register(broker, apis)  # consumer groups: 8, 9, 11-16, 42 (broker/handlers/groups.py)
    if broker.quorum is not None:
        from broker.handlers import describe_quorum
        apis[55] = ApiSpec(0, 2, describe_quorum.handler(broker))
    apis[18] = ApiSpec(0, 3, api_versions.handler(apis))
    return apis
