"""`brokerctl topics ...`: create, list, describe, alter and delete topics (client.Admin).

    brokerctl topics create NAME [--partitions N] [--replication-factor R] [--config KEY=VALUE]...
    brokerctl topics list [--json]
    brokerctl topics describe [TOPIC]... [--json] [--under-replicated] [--unavailable]
    brokerctl topics alter NAME [--config KEY=VALUE]... [--delete-config KEY]...
    brokerctl topics delete NAME

`--partitions` / `--replication-factor` left out take the broker's `num.partitions` /
`default.replication.factor` (CreateTopics with -1, KIP-464).

`describe` describes the named topics (every topic, by name, when none is named); an unknown name
fails the command. `describe --json` prints exactly one JSON array, one object per topic:

    [{"name": str,
      "partitions": [{"partition": int, "leader": int, "leader_epoch": int, "replicas": [int],
                      "isr": [int], "offline_replicas": [int], "log_start_offset": int | null,
                      "high_watermark": int | null, "error": str | null}, ...],   # by partition id
      "configs": {KEY: VALUE, ...}}, ...]                 # the topic's non-default configs

`leader` is -1 for a partition without a leader; `leader_epoch` comes from Metadata v7+ (KIP-320);
`error` is the partition's Metadata error name (e.g. "LEADER_NOT_AVAILABLE") or null;
`log_start_offset` and `high_watermark` come from ListOffsets (earliest / latest) and are null for a
partition without a live leader. `configs` holds what `kafka-topics --describe` shows: the configs
whose value does not come from the defaults (those set with `--config` or `alter`).

Filters (as kafka-topics' `--under-replicated-partitions` / `--unavailable-partitions`; given
together, a partition either selects is kept): `--under-replicated` keeps partitions whose ISR is
smaller than their replica set; `--unavailable` those whose leader is -1 or not a live broker of
the same Metadata answer. Topics left with no partition are left out, and the text output then has
no topic header lines. `list --json` prints a JSON array of names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import click

from client import Admin
from client.admin import PartitionDescription
from client.wire.errors import ErrorCode
from tools.brokerctl_common import (
    API_TIMEOUT_MS,
    Settings,
    echo_json,
    parse_config_pairs,
    run,
    settings,
    started,
)


def admin_session(found: Settings) -> AbstractAsyncContextManager[Admin]:
    """`async with admin_session(found) as admin:` a started Admin, closed at the end."""
    return started(Admin(found.bootstrap_server, default_api_timeout_ms=API_TIMEOUT_MS, **found.client_config()),
                   found)


@click.group("topics")
def topics_group() -> None:
    """Create, list, describe, alter and delete topics."""


@topics_group.command("create")
@click.argument("name")
@click.option("--partitions", type=click.IntRange(min=1), default=None, metavar="N",
              help="Partition count  [default: the broker's num.partitions]")
@click.option("--replication-factor", type=click.IntRange(min=1), default=None, metavar="R",
              help="Replicas per partition  [default: the broker's default.replication.factor]")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE", callback=parse_config_pairs,
              help="A topic config (repeatable), e.g. retention.ms=3600000.")
@click.pass_context
def create_command(ctx: click.Context, name: str, partitions: int | None, replication_factor: int | None,
                   configs: dict[str, str]) -> None:
    """Create topic NAME."""
    async def create() -> None:
        async with admin_session(settings(ctx)) as client:
            await client.create_topic(name, partitions or -1, replication_factor or -1, configs)

    run(ctx, create())
    click.echo(f"Created topic {name}.")


@topics_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of names.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List the topics, one name per line, sorted."""
    async def names() -> list[str]:
        async with admin_session(settings(ctx)) as client:
            return await client.list_topics()

    found = run(ctx, names())
    if as_json:
        echo_json(found)
    else:
        for name in found:
            click.echo(name)


def partition_entry(p: PartitionDescription) -> dict[str, Any]:
    """One partition of `describe --json` (module docstring), in that key order."""
    return {"partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
            "replicas": list(p.replicas), "isr": list(p.isr), "offline_replicas": list(p.offline_replicas),
            "log_start_offset": p.log_start_offset, "high_watermark": p.high_watermark,
            "error": None if p.error == ErrorCode.NONE else p.error.name}


def is_under_replicated(partition: dict[str, Any]) -> bool:
    """Fewer in-sync replicas than replicas (kafka-topics --under-replicated-partitions)."""
    return len(partition["isr"]) < len(partition["replicas"])


def is_unavailable(partition: dict[str, Any], live_brokers: Collection[int]) -> bool:
    """No leader, or a leader that is not a live broker (kafka-topics --unavailable-partitions)."""
    return partition["leader"] < 0 or partition["leader"] not in live_brokers


def select_partitions(topics: list[dict[str, Any]], live_brokers: Collection[int], *, under_replicated: bool,
                      unavailable: bool) -> list[dict[str, Any]]:
    """The `describe` objects keeping only the partitions a filter selects (any of those given, as
    kafka-topics does); topics left without partitions are dropped. No filter: `topics` unchanged."""
    if not under_replicated and not unavailable:
        return topics

    def wanted(p: dict[str, Any]) -> bool:
        return (under_replicated and is_under_replicated(p)) or (unavailable and is_unavailable(p, live_brokers))

    selected = [{**topic, "partitions": [p for p in topic["partitions"] if wanted(p)]} for topic in topics]
    return [topic for topic in selected if topic["partitions"]]


async def describe_topics(client: Admin, names: Sequence[str]) -> tuple[list[dict[str, Any]], set[int]]:
    """(the `describe --json` objects of `names`, every topic when empty, by name; the live broker ids
    of the same Metadata answer)."""
    descriptions = await client.describe_topics(list(dict.fromkeys(names)) or None)
    live_brokers = set(client.cluster.metadata.brokers)
    configs = await asyncio.gather(*(client.describe_configs(name) for name in descriptions))
    topics = [{"name": d.name,
               "partitions": [partition_entry(p) for p in d.partitions],
               "configs": {key: entry.value for key, entry in sorted(found.items()) if not entry.is_default}}
              for d, found in zip(descriptions.values(), configs)]
    return topics, live_brokers


def _text(value: Any) -> str:
    return "none" if value is None or value == -1 else str(value)


def _partition_line(name: str, p: dict[str, Any]) -> str:
    line = (f"\tTopic: {name}\tPartition: {p['partition']}\tLeader: {_text(p['leader'])}\t"
            f"LeaderEpoch: {p['leader_epoch']}\tReplicas: {','.join(map(str, p['replicas']))}\t"
            f"Isr: {','.join(map(str, p['isr']))}\tLogStartOffset: {_text(p['log_start_offset'])}\t"
            f"HighWatermark: {_text(p['high_watermark'])}")
    if p["offline_replicas"]:
        line += f"\tOffline: {','.join(map(str, p['offline_replicas']))}"
    return line


def _describe_lines(topic: dict[str, Any], *, header: bool = True) -> list[str]:
    """kafka-topics --describe's layout: a topic line (left out when filtering, as kafka-topics
    does), then one tab-indented line per partition."""
    lines = []
    if header:
        replication = len(topic["partitions"][0]["replicas"]) if topic["partitions"] else 0
        configs = ",".join(f"{key}={value}" for key, value in topic["configs"].items())
        lines.append(f"Topic: {topic['name']}\tPartitionCount: {len(topic['partitions'])}\t"
                     f"ReplicationFactor: {replication}\tConfigs: {configs}")
    lines += [_partition_line(topic["name"], p) for p in topic["partitions"]]
    return lines


@topics_group.command("describe")
@click.argument("names", nargs=-1, metavar="[TOPIC]...")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of topic objects (see the module docstring).")
@click.option("--under-replicated", is_flag=True, help="Only partitions whose ISR is smaller than their replicas.")
@click.option("--unavailable", is_flag=True, help="Only partitions without a (live) leader.")
@click.pass_context
def describe_command(ctx: click.Context, names: tuple[str, ...], as_json: bool, under_replicated: bool,
                     unavailable: bool) -> None:
    """Partitions (leader, leader epoch, replicas, ISR, offline replicas, offsets) and non-default
    configs of each TOPIC (every topic when none is named)."""
    async def describe() -> tuple[list[dict[str, Any]], set[int]]:
        async with admin_session(settings(ctx)) as client:
            return await describe_topics(client, names)

    topics, live_brokers = run(ctx, describe())
    selected = select_partitions(topics, live_brokers, under_replicated=under_replicated, unavailable=unavailable)
    if as_json:
        echo_json(selected)
        return
    filtering = under_replicated or unavailable
    for topic in selected:
        for line in _describe_lines(topic, header=not filtering):
            click.echo(line)


@topics_group.command("alter")
@click.argument("name")
@click.option("--config", "configs", multiple=True, metavar="KEY=VALUE", callback=parse_config_pairs,
              help="Set a topic config (repeatable).")
@click.option("--delete-config", "deletes", multiple=True, metavar="KEY",
              help="Remove a topic config, back to its default (repeatable).")
@click.pass_context
def alter_command(ctx: click.Context, name: str, configs: dict[str, str], deletes: tuple[str, ...]) -> None:
    """Set and delete configs of topic NAME (IncrementalAlterConfigs)."""
    if not configs and not deletes:
        raise click.UsageError("nothing to alter: give --config KEY=VALUE and/or --delete-config KEY", ctx=ctx)
    both = sorted(set(configs) & set(deletes))
    if both:
        raise click.UsageError(f"set and deleted at once: {', '.join(both)}", ctx=ctx)
    changes: dict[str, str | None] = {**configs, **dict.fromkeys(deletes)}

    async def alter() -> None:
        async with admin_session(settings(ctx)) as client:
            await client.alter_configs(name, changes)

    run(ctx, alter())
    click.echo(f"Altered configs of topic {name}.")


@topics_group.command("delete")
@click.argument("name")
@click.pass_context
def delete_command(ctx: click.Context, name: str) -> None:
    """Delete topic NAME and its data."""
    async def delete() -> None:
        async with admin_session(settings(ctx)) as client:
            await client.delete_topic(name)

    run(ctx, delete())
    click.echo(f"Deleted topic {name}.")
