"""`brokerctl topics ...` and `brokerctl cluster describe` against a real brokerd (the `broker` /
`start_broker` fixtures), through click's CliRunner: every command in text and JSON, the exact JSON
shapes, and the broker's refusals as one stderr line with exit code 1."""

from __future__ import annotations

import contextlib
import json

import pytest
from click.testing import CliRunner, Result

import tools.brokerctl_topics
from client.sync import SyncProducer
from tools.brokerctl import main
from tools.brokerctl_topics import is_unavailable, is_under_replicated, select_partitions

PARTITION_KEYS = {"partition", "leader", "leader_epoch", "replicas", "isr", "offline_replicas", "log_start_offset",
                  "high_watermark", "error"}


def cli(bootstrap: str, *args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["-b", bootstrap, *args], input=input, catch_exceptions=False)


def assert_one_line_error(result: Result, exit_code: int, *fragments: str) -> None:
    """The error contract: the exit code, one line on stderr, no traceback, nothing on stdout."""
    assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("brokerctl: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_topic_lifecycle(broker) -> None:
    b = broker.bootstrap
    result = cli(b, "topics", "create", "orders", "--partitions", "3", "--replication-factor", "1",
                 "--config", "retention.ms=3600000", "--config", "cleanup.policy=delete")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "Created topic orders.\n", "")
    assert cli(b, "topics", "create", "audit", "--partitions", "1").exit_code == 0

    assert cli(b, "topics", "list").stdout == "audit\norders\n"
    assert json.loads(cli(b, "topics", "list", "--json").stdout) == ["audit", "orders"]

    (described,) = json.loads(cli(b, "topics", "describe", "orders", "--json").stdout)
    assert set(described) == {"name", "partitions", "configs"}
    assert described["name"] == "orders"
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    for p in described["partitions"]:
        assert set(p) == PARTITION_KEYS
        assert (p["leader"], p["leader_epoch"], p["replicas"], p["isr"]) == (1, 0, [1], [1])
        assert (p["offline_replicas"], p["error"]) == ([], None)
        assert (p["log_start_offset"], p["high_watermark"]) == (0, 0)
    # only the configs the topic sets, as kafka-topics --describe shows them
    assert described["configs"] == {"cleanup.policy": "delete", "retention.ms": "3600000"}

    text = cli(b, "topics", "describe", "orders").stdout.splitlines()
    assert text[0] == ("Topic: orders\tPartitionCount: 3\tReplicationFactor: 1\t"
                       "Configs: cleanup.policy=delete,retention.ms=3600000")
    assert text[1] == ("\tTopic: orders\tPartition: 0\tLeader: 1\tLeaderEpoch: 0\tReplicas: 1\tIsr: 1\t"
                       "LogStartOffset: 0\tHighWatermark: 0")
    assert len(text) == 4

    result = cli(b, "topics", "alter", "orders", "--config", "retention.ms=7200000", "--config",
                 "max.message.bytes=2000000", "--delete-config", "cleanup.policy")
    assert (result.exit_code, result.stdout) == (0, "Altered configs of topic orders.\n")
    assert json.loads(cli(b, "topics", "describe", "orders", "--json").stdout)[0]["configs"] == {
        "max.message.bytes": "2000000", "retention.ms": "7200000"}

    result = cli(b, "topics", "delete", "audit")
    assert (result.exit_code, result.stdout) == (0, "Deleted topic audit.\n")
    assert cli(b, "topics", "list").stdout == "orders\n"


def test_describe_reports_offsets(broker) -> None:
    assert cli(broker.bootstrap, "topics", "create", "events", "--partitions", "2").exit_code == 0
    with SyncProducer(broker.bootstrap) as producer:
        for i in range(5):
            producer.send("events", b"v%d" % i, partition=i % 2)
        producer.flush()
    (described,) = json.loads(cli(broker.bootstrap, "topics", "describe", "events", "--json").stdout)
    assert [(p["log_start_offset"], p["high_watermark"]) for p in described["partitions"]] == [(0, 3), (0, 2)]
    assert described["configs"] == {}
    assert "Configs: \n" in cli(broker.bootstrap, "topics", "describe", "events").stdout


def test_create_takes_the_brokers_defaults(start_broker) -> None:
    broker = start_broker("--set", "num.partitions=4")
    assert cli(broker.bootstrap, "topics", "create", "defaulted").exit_code == 0
    (described,) = json.loads(cli(broker.bootstrap, "topics", "describe", "defaulted", "--json").stdout)
    assert len(described["partitions"]) == 4
    assert {len(p["replicas"]) for p in described["partitions"]} == {1}


def test_broker_refusals_are_one_line(broker) -> None:
    b = broker.bootstrap
    assert cli(b, "topics", "create", "orders", "--partitions", "1").exit_code == 0
    assert_one_line_error(cli(b, "topics", "create", "orders", "--partitions", "1"), 1, "TOPIC_ALREADY_EXISTS")
    assert_one_line_error(cli(b, "topics", "create", "wide", "--replication-factor", "3"), 1,
                          "INVALID_REPLICATION_FACTOR")
    assert_one_line_error(cli(b, "topics", "create", "bad name"), 1)
    assert_one_line_error(cli(b, "topics", "create", "cfg", "--config", "no.such.config=1"), 1, "INVALID_CONFIG")
    assert_one_line_error(cli(b, "topics", "describe", "missing"), 1, "UNKNOWN_TOPIC_OR_PARTITION")
    assert_one_line_error(cli(b, "topics", "describe", "missing", "--json"), 1, "UNKNOWN_TOPIC_OR_PARTITION")
    assert_one_line_error(cli(b, "topics", "delete", "missing"), 1, "UNKNOWN_TOPIC_OR_PARTITION")
    assert_one_line_error(cli(b, "topics", "alter", "missing", "--config", "retention.ms=1"), 1,
                          "UNKNOWN_TOPIC_OR_PARTITION")
    assert_one_line_error(cli(b, "topics", "alter", "orders", "--config", "retention.ms=soon"), 1, "INVALID_CONFIG")
    assert cli(b, "topics", "list").stdout == "orders\n"  # nothing was created by the refused calls


@pytest.mark.parametrize("args", [
    ["topics", "create", "t", "--partitions", "0"],
    ["topics", "create", "t", "--replication-factor", "x"],
    ["topics", "create", "t", "--config", "retention.ms"],
    ["topics", "create", "t", "--config", "=1"],
    ["topics", "create", "t", "--config", "a=1", "--config", "a=2"],
    ["topics", "create"],
    ["topics", "alter", "t"],
    ["topics", "alter", "t", "--config", "retention.ms=1", "--delete-config", "retention.ms"],
    ["topics", "describe", "--under-replicated=yes"],
    ["topics", "frobnicate"],
    ["nonsense"],
], ids=lambda args: "-".join(a.strip("-") for a in args[1:]) or args[0])
def test_bad_arguments_are_usage_errors(args: list[str]) -> None:
    # rejected before any connection: no broker listens on port 1
    assert_one_line_error(cli("127.0.0.1:1", *args), 2, "--help")


def test_cluster_describe(broker) -> None:
    b = broker.bootstrap
    assert cli(b, "topics", "create", "a", "--partitions", "3").exit_code == 0
    assert cli(b, "topics", "create", "b", "--partitions", "2").exit_code == 0
    described = json.loads(cli(b, "cluster", "describe", "--json").stdout)
    assert set(described) == {"cluster_id", "controller_id", "brokers"}
    assert isinstance(described["cluster_id"], str) and described["cluster_id"]
    assert described["controller_id"] == 1
    assert described["brokers"] == [{"id": 1, "host": "127.0.0.1", "port": broker.port, "rack": None,
                                     "leader_count": 5}]
    text = cli(b, "cluster", "describe").stdout.splitlines()
    assert text == [f"ClusterId: {described['cluster_id']}\tControllerId: 1",
                    f"Broker: 1\tHost: 127.0.0.1\tPort: {broker.port}\tLeaders: 5"]
    # the cluster id is stable across a restart (it is stored, not made up per process)
    broker.restart()
    assert json.loads(cli(b, "cluster", "describe", "--json").stdout)["cluster_id"] == described["cluster_id"]


def test_bootstrap_from_the_environment(broker) -> None:
    assert cli(broker.bootstrap, "topics", "create", "envy").exit_code == 0
    result = CliRunner(env={"REPLOG_BOOTSTRAP": broker.bootstrap}).invoke(main, ["topics", "list"])
    assert (result.exit_code, result.stdout) == (0, "envy\n")


def test_describe_every_topic_and_several_names(broker) -> None:
    b = broker.bootstrap
    for name, partitions in (("beta", "1"), ("alpha", "2")):
        assert cli(b, "topics", "create", name, "--partitions", partitions).exit_code == 0
    every = json.loads(cli(b, "topics", "describe", "--json").stdout)
    assert [(t["name"], len(t["partitions"])) for t in every] == [("alpha", 2), ("beta", 1)]
    named = json.loads(cli(b, "topics", "describe", "beta", "alpha", "beta", "--json").stdout)
    assert [t["name"] for t in named] == ["beta", "alpha"]  # as named, each once
    text = cli(b, "topics", "describe").stdout.splitlines()
    assert [line.split("\t")[0] for line in text if not line.startswith("\t")] == ["Topic: alpha", "Topic: beta"]
    assert len(text) == 2 + 3
    assert_one_line_error(cli(b, "topics", "describe", "alpha", "ghost"), 1, "UNKNOWN_TOPIC_OR_PARTITION")


def test_describe_filters_on_a_healthy_single_node(broker) -> None:
    # RF=1 on one live broker: nothing is under-replicated or unavailable
    assert cli(broker.bootstrap, "topics", "create", "calm", "--partitions", "2").exit_code == 0
    for flags in (["--under-replicated"], ["--unavailable"], ["--under-replicated", "--unavailable"]):
        result = cli(broker.bootstrap, "topics", "describe", *flags, "--json")
        assert (result.exit_code, json.loads(result.stdout)) == (0, [])
        result = cli(broker.bootstrap, "topics", "describe", "calm", *flags)
        assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


# --- the filters on canned metadata (a single node cannot be under-replicated or offline) ----------

def canned_partition(partition: int, leader: int, replicas: list[int], isr: list[int], *,
                     offline: list[int] | None = None) -> dict:
    live = leader >= 0
    return {"partition": partition, "leader": leader, "leader_epoch": 3, "replicas": replicas, "isr": isr,
            "offline_replicas": offline or [], "log_start_offset": 0 if live else None,
            "high_watermark": 7 if live else None, "error": None if live else "LEADER_NOT_AVAILABLE"}


CANNED = [
    {"name": "a", "configs": {}, "partitions": [
        canned_partition(0, 1, [1, 2, 3], [1, 2, 3]),                # healthy
        canned_partition(1, 2, [2, 3, 1], [2, 3]),                   # under-replicated
        canned_partition(2, -1, [3, 1, 2], [3], offline=[3]),        # offline: under-replicated too
        canned_partition(3, 4, [4, 1, 2], [4, 1, 2])]},              # leader 4 is not a live broker
    {"name": "b", "configs": {"retention.ms": "1"}, "partitions": [
        canned_partition(0, 1, [1, 2], [1, 2])]},
]
LIVE = {1, 2, 3}


def test_is_under_replicated_and_is_unavailable() -> None:
    partitions = CANNED[0]["partitions"]
    assert [is_under_replicated(p) for p in partitions] == [False, True, True, False]
    assert [is_unavailable(p, LIVE) for p in partitions] == [False, False, True, True]


@pytest.mark.parametrize(("under_replicated", "unavailable", "expected"), [
    (False, False, {"a": [0, 1, 2, 3], "b": [0]}),
    (True, False, {"a": [1, 2]}),
    (False, True, {"a": [2, 3]}),
    (True, True, {"a": [1, 2, 3]}),  # either filter selects
])
def test_select_partitions(under_replicated: bool, unavailable: bool, expected: dict[str, list[int]]) -> None:
    selected = select_partitions(CANNED, LIVE, under_replicated=under_replicated, unavailable=unavailable)
    assert {t["name"]: [p["partition"] for p in t["partitions"]] for t in selected} == expected
    assert [p["partition"] for p in CANNED[0]["partitions"]] == [0, 1, 2, 3]  # the input is left as it was


def test_describe_command_filters_canned_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []

    async def canned(client: object, names: tuple[str, ...]) -> tuple[list[dict], set[int]]:
        asked.append(tuple(names))
        return CANNED, LIVE

    monkeypatch.setattr(tools.brokerctl_topics, "describe_topics", canned)
    monkeypatch.setattr(tools.brokerctl_topics, "admin_session", lambda found: contextlib.nullcontext(None))
    result = cli("127.0.0.1:1", "topics", "describe", "--unavailable", "--json")
    assert result.exit_code == 0, result.stderr
    (topic,) = json.loads(result.stdout)
    assert [p["partition"] for p in topic["partitions"]] == [2, 3]
    assert set(topic["partitions"][0]) == PARTITION_KEYS
    assert topic["partitions"][0]["error"] == "LEADER_NOT_AVAILABLE"

    text = cli("127.0.0.1:1", "topics", "describe", "a", "--under-replicated").stdout.splitlines()
    assert text == [
        "\tTopic: a\tPartition: 1\tLeader: 2\tLeaderEpoch: 3\tReplicas: 2,3,1\tIsr: 2,3\tLogStartOffset: 0\t"
        "HighWatermark: 7",
        "\tTopic: a\tPartition: 2\tLeader: none\tLeaderEpoch: 3\tReplicas: 3,1,2\tIsr: 3\tLogStartOffset: none\t"
        "HighWatermark: none\tOffline: 3"]  # no topic header lines when filtering, as kafka-topics
    text = cli("127.0.0.1:1", "topics", "describe").stdout.splitlines()
    assert text[0] == "Topic: a\tPartitionCount: 4\tReplicationFactor: 3\tConfigs: "
    assert text[5] == "Topic: b\tPartitionCount: 1\tReplicationFactor: 2\tConfigs: retention.ms=1"
    assert asked == [(), ("a",), ()]
