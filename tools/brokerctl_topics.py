"""`brokerctl topics ...`: create, list, describe, alter and delete topics (client.Admin).

    brokerctl topics create NAME [--partitions N] [--replication-factor R] [--config KEY=VALUE]...
    brokerctl topics list [--json]
    brokerctl topics describe NAME [--json]
    brokerctl topics alter NAME [--config KEY=VALUE]... [--delete-config KEY]...
    brokerctl topics delete NAME

`--partitions` / `--replication-factor` left out take the broker's `num.partitions` /
`default.replication.factor` (CreateTopics with -1, KIP-464). `describe --json` prints exactly

    {"name": str,
     "partitions": [{"partition", "leader", "leader_epoch", "replicas", "isr", "log_start_offset",
                     "high_watermark"}, ...],          # by partition id; replicas and isr are lists of ids
     "configs": {KEY: VALUE, ...}}                     # the topic's non-default configs

`configs` holds what `kafka-topics --describe` shows: the configs whose value does not come from
the defaults (those set with `--config` or `alter`); `log_start_offset` and `high_watermark` come
from ListOffsets (earliest / latest). `list --json` prints a JSON array of names.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import click

from client import Admin
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


async def describe_topic(client: Admin, name: str) -> dict[str, Any]:
    """The `describe --json` object of topic `name` (module docstring)."""
    description = (await client.describe_topics([name]))[name]
    configs = await client.describe_configs(name)
    return {
        "name": description.name,
        "partitions": [{"partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
                        "replicas": list(p.replicas), "isr": list(p.isr), "log_start_offset": p.log_start_offset,
                        "high_watermark": p.high_watermark} for p in description.partitions],
        "configs": {key: entry.value for key, entry in sorted(configs.items()) if not entry.is_default},
    }


def _describe_lines(topic: dict[str, Any]) -> list[str]:
    """kafka-topics --describe's layout: a topic line, then one tab-indented line per partition."""
    replication = len(topic["partitions"][0]["replicas"]) if topic["partitions"] else 0
    configs = ",".join(f"{key}={value}" for key, value in topic["configs"].items())
    lines = [f"Topic: {topic['name']}\tPartitionCount: {len(topic['partitions'])}\t"
             f"ReplicationFactor: {replication}\tConfigs: {configs}"]
    for p in topic["partitions"]:
        lines.append(f"\tTopic: {topic['name']}\tPartition: {p['partition']}\tLeader: {p['leader']}\t"
                     f"LeaderEpoch: {p['leader_epoch']}\tReplicas: {','.join(map(str, p['replicas']))}\t"
                     f"Isr: {','.join(map(str, p['isr']))}\tLogStartOffset: {p['log_start_offset']}\t"
                     f"HighWatermark: {p['high_watermark']}")
    return lines


@topics_group.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (see the module docstring).")
@click.pass_context
def describe_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Partitions (leader, leader epoch, replicas, ISR, offsets) and non-default configs of topic NAME."""
    async def describe() -> dict[str, Any]:
        async with admin_session(settings(ctx)) as client:
            return await describe_topic(client, name)

    topic = run(ctx, describe())
    if as_json:
        echo_json(topic)
    else:
        for line in _describe_lines(topic):
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
