"""broker/config.py: Kafka names, sources and their order, validation, topic config fallback."""

from __future__ import annotations

import pytest

from broker.config import ConfigError, load_config, validate_topic_config


def test_defaults_make_a_working_single_node() -> None:
    config = load_config()
    assert config.node_id == 1
    assert config.listen == "127.0.0.1:9092"
    assert config.data_dir == "./replog-data"
    assert config.advertised_address == "127.0.0.1:9092"
    log_config = config.log_config()
    assert log_config.segment_bytes == 1 << 30
    assert log_config.flush_messages is None and log_config.flush_ms is None


def test_toml_then_overrides(tmp_path) -> None:
    path = tmp_path / "broker.toml"
    path.write_text('"node.id" = 3\n[log]\n"retention.ms" = 1000\n"segment.bytes" = 4096\n')
    config = load_config(str(path), {"log.segment.bytes": "8192"})
    assert config.node_id == 3
    assert config.log_retention_ms == 1000
    assert config.log_segment_bytes == 8192  # --set wins over the file


def test_topic_configs_fall_back_to_broker_settings() -> None:
    config = load_config(None, {"log.retention.ms": "5000", "log.cleanup.policy": "compact"})
    assert config.log_config().retention_ms == 5000
    topic = config.log_config({"retention.ms": "10", "cleanup.policy": "delete,compact", "flush.messages": "1"})
    assert topic.retention_ms == 10
    assert topic.cleanup_policy == "compact,delete"
    assert topic.flush_messages == 1
    assert config.topic_config_defaults()["retention.ms"] == "5000"


@pytest.mark.parametrize("overrides,needle", [
    ({"no.such": "1"}, "unknown config"),
    ({"node.id": "x"}, "invalid value"),
    ({"log.segment.bytes": "10"}, ">= 1024"),
    ({"listeners": "localhost"}, "HOST:PORT"),
    ({"log.cleanup.policy": "forever"}, "cleanup.policy"),
    ({"auto.create.topics.enable": "maybe"}, "boolean"),
])
def test_bad_values_are_clear_errors(overrides, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


def test_validate_topic_config() -> None:
    assert validate_topic_config("retention.ms", "100") == "100"
    assert validate_topic_config("cleanup.policy", "compact") == "compact"
    with pytest.raises(ConfigError):
        validate_topic_config("retention.ms", "soon")
    with pytest.raises(ConfigError):
        validate_topic_config("no.such.config", "1")
