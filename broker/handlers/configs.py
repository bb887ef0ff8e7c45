"""DescribeConfigs (32) v1-3 and IncrementalAlterConfigs (44) v0, for topics (and broker reads).

Topic configs: every served topic config (broker/config.py TOPIC_SETTINGS) with its value; source
DYNAMIC_TOPIC_CONFIG (1) when the topic sets it, else DEFAULT_CONFIG (5). Alter supports SET (0)
and DELETE (1); APPEND/SUBTRACT (list configs) are INVALID_REQUEST. Values are validated first;
a valid change is stored and applied to the topic's logs at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from broker.config import BROKER_SETTINGS, ConfigError, validate_topic_config
from broker.handlers import clip_message
from broker.server import Handler
from client.wire.errors import ErrorCode

if TYPE_CHECKING:
    from broker.broker import Broker

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4
SOURCE_DYNAMIC_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5
OP_SET, OP_DELETE = 0, 1


def _entry(name: str, value: str | None, source: int, read_only: bool = False) -> dict[str, Any]:
    return {"name": name, "value": value, "read_only": read_only, "config_source": source, "is_default": source == 5,
            "is_sensitive": False, "synonyms": [], "config_type": 0, "documentation": None}


def _describe(broker: Broker, resource: dict[str, Any]) -> dict[str, Any]:
    kind, name = resource["resource_type"], resource["resource_name"]
    keys = resource.get("configuration_keys")
    out = {"error_code": 0, "error_message": None, "resource_type": kind, "resource_name": name, "configs": []}
    if kind == RESOURCE_TOPIC:
        info = broker.topics.get(name)
        if info is None:
            out["error_code"], out["error_message"] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name}"
            return out
        defaults = broker.config.topic_config_defaults()
        entries = [_entry(k, info.configs.get(k, v), SOURCE_DYNAMIC_TOPIC if k in info.configs else SOURCE_DEFAULT)
                   for k, v in sorted(defaults.items())]
    elif kind == RESOURCE_BROKER:
        if name not in ("", str(broker.node_id)):
            out["error_code"], out["error_message"] = ErrorCode.INVALID_REQUEST, f"not broker {name}"
            return out
        entries = [_entry(s.kafka_name, str(broker.config.values[s.python_name]), SOURCE_STATIC_BROKER, True)
                   for s in BROKER_SETTINGS]
    else:
        out["error_code"], out["error_message"] = ErrorCode.INVALID_REQUEST, f"unsupported resource type {kind}"
        return out
    out["configs"] = [e for e in entries if keys is None or e["name"] in keys]
    return out


def describe_configs_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        results = [_describe(broker, r) for r in body["resources"]]
        for result in results:
            result["error_message"] = clip_message(result["error_message"])
        return {"throttle_time_ms": 0, "results": results}
    return handle


async def _alter(broker: Broker, resource: dict[str, Any], validate_only: bool) -> tuple[int, str | None]:
    kind, name = resource["resource_type"], resource["resource_name"]
    if kind != RESOURCE_TOPIC:
        return ErrorCode.INVALID_REQUEST, "only topic configs can be altered"
    if broker.topics.get(name) is None:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name}"
    changes: dict[str, str | None] = {}
    try:
        for entry in resource["configs"]:
            op = entry["config_operation"]
            if op == OP_SET:
                if entry["value"] is None:  # else str(None) would be stored as the value "None"
                    return ErrorCode.INVALID_CONFIG, f"null value for {entry['name']}"
                changes[entry["name"]] = validate_topic_config(entry["name"], entry["value"])
            elif op == OP_DELETE:
                validate_topic_config(entry["name"], broker.config.topic_config_defaults().get(entry["name"], "0"))
                changes[entry["name"]] = None
            else:
                return ErrorCode.INVALID_REQUEST, f"config operation {op} is not supported"
    except ConfigError as exc:
        return ErrorCode.INVALID_CONFIG, str(exc)
    if broker.quorum is not None:
        return await broker.quorum.alter_configs(name, changes, validate_only)
    if not validate_only:
        broker.topics.alter_configs(name, changes)
        broker.reconfigure_topic(name)
    return 0, None


def incremental_alter_configs_handler(broker: Broker) -> Handler:
    async def handle(conn: Any, header: Any, body: dict[str, Any]) -> dict[str, Any]:
        responses = []
        for resource in body["resources"]:
            error, message = await _alter(broker, resource, body.get("validate_only", False))
            responses.append({"error_code": error, "error_message": clip_message(message),
                              "resource_type": resource["resource_type"], "resource_name": resource["resource_name"]})
        return {"throttle_time_ms": 0, "responses": responses}
    return handle
