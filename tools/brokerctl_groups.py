"""`brokerctl groups ...`: list, describe, delete consumer groups and reset their offsets (client.Admin).

    brokerctl groups list [--json]
    brokerctl groups describe GROUP [--json]
    brokerctl groups delete GROUP
    brokerctl groups reset-offsets GROUP --topic T (--to-earliest | --to-latest | --to-offset N)
                                   [--partition P]... [--dry-run]

`list` prints one line per group, `GROUP_ID STATE PROTOCOL_TYPE`, sorted by id (`--json`: an array
of {"group_id", "state", "protocol_type"}; state is null from a broker without ListGroups v4).

`describe --json` prints one object (the text output shows the same, as kafka-consumer-groups):

    {"group_id": str, "state": str, "protocol_type": str, "protocol": str, "coordinator": int,
     "members": [{"member_id": str, "group_instance_id": str | null, "client_id": str, "client_host": str,
                  "assignment": [{"topic": str, "partition": int}, ...]}, ...],
     "offsets": [{"topic": str, "partition": int, "committed_offset": int | null,
                  "log_end_offset": int | null, "lag": int | null, "member_id": str | null}, ...]}

`offsets` has one entry per partition that has a committed offset or is assigned to a member,
sorted by (topic, partition): `log_end_offset` is the partition's high watermark (null when no
leader answers), `lag` = log_end_offset - committed_offset (null when either is unknown),
`member_id` the member that owns it now (null: nobody).

`reset-offsets` sets the committed offsets of GROUP for topic T (every partition, or those given
with `--partition`) to each partition's log start (`--to-earliest`), high watermark
(`--to-latest`) or N (`--to-offset`, clamped to [log start, high watermark] as Kafka's tool does).
As Kafka, it is refused while the group has members (state other than Empty or Dead: stop the
consumers first), exit 1. It prints `TOPIC PARTITION NEW-OFFSET` per partition; `--dry-run` only
prints.

Exit codes and the one-line error contract: tools/brokerctl_common.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import click

from client import Admin
from client.admin import GroupDescription
from client.offsets import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, list_offsets
from tools.brokerctl_common import (
    API_TIMEOUT_MS,
    CommandError,
    Settings,
    echo_json,
    run,
    settings,
    started,
    topic_partitions,
)

INACTIVE_STATES = ("Empty", "Dead")


def admin_session(found: Settings) -> AbstractAsyncContextManager[Admin]:
    return started(Admin(found.bootstrap_server, default_api_timeout_ms=API_TIMEOUT_MS, **found.client_config()),
                   found)


@click.group("groups")
def groups_group() -> None:
    """List, describe and delete consumer groups; reset their committed offsets."""


@groups_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array of {group_id, state, protocol_type}.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List the groups of every broker, sorted by id."""
    async def listing() -> list[dict[str, Any]]:
        async with admin_session(settings(ctx)) as client:
            return [{"group_id": g.group_id, "state": g.state, "protocol_type": g.protocol_type}
                    for g in await client.list_groups()]

    found = run(ctx, listing())
    if as_json:
        echo_json(found)
        return
    for g in found:
        click.echo(f"{g['group_id']} {g['state'] or '-'} {g['protocol_type'] or '-'}")


async def describe_group(client: Admin, group_id: str) -> dict[str, Any]:
    """The `describe --json` object (module docstring)."""
    description: GroupDescription = (await client.describe_groups([group_id]))[group_id]
    committed = await client.list_consumer_group_offsets(group_id)
    owners = {tp: m.member_id for m in description.members for tp in m.assignment}
    tps = sorted(set(committed) | set(owners))
    ends: dict[tuple[str, int], int] = {}
    if tps:
        await client.cluster.fetch_metadata(sorted({t for t, _ in tps}))
        leader = client.cluster.metadata.leader
        live = [tp for tp in tps if leader(tp) >= 0]
        if live:
            found = await list_offsets(client.cluster, dict.fromkeys(live, LATEST_TIMESTAMP),
                                       timeout_ms=client.default_api_timeout_ms)
            ends = {tp: v.offset for tp, v in found.items()}
    offsets = []
    for tp in tps:
        current, end = committed.get(tp), ends.get(tp)
        offsets.append({"topic": tp[0], "partition": tp[1], "committed_offset": current, "log_end_offset": end,
                        "lag": None if current is None or end is None else max(end - current, 0),
                        "member_id": owners.get(tp)})
    return {"group_id": group_id, "state": description.state, "protocol_type": description.protocol_type,
            "protocol": description.protocol, "coordinator": description.coordinator,
            "members": [{"member_id": m.member_id, "group_instance_id": m.group_instance_id,
                         "client_id": m.client_id, "client_host": m.client_host,
                         "assignment": [{"topic": t, "partition": p} for t, p in m.assignment]}
                        for m in description.members],
            "offsets": offsets}


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


@groups_group.command("describe")
@click.argument("group_id", metavar="GROUP")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (see `brokerctl groups --help`).")
@click.pass_context
def describe_command(ctx: click.Context, group_id: str, as_json: bool) -> None:
    """State, members, assignments, committed offsets and lag of GROUP."""
    async def describe() -> dict[str, Any]:
        async with admin_session(settings(ctx)) as client:
            return await describe_group(client, group_id)

    found = run(ctx, describe())
    if as_json:
        echo_json(found)
        return
    click.echo(f"GROUP {found['group_id']} STATE {found['state']} PROTOCOL {found['protocol'] or '-'} "
               f"COORDINATOR {found['coordinator']} MEMBERS {len(found['members'])}")
    clients = {m["member_id"]: m["client_id"] for m in found["members"]}
    click.echo("TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG MEMBER-ID CLIENT-ID")
    for o in found["offsets"]:
        click.echo(f"{o['topic']} {o['partition']} {_text(o['committed_offset'])} {_text(o['log_end_offset'])} "
                   f"{_text(o['lag'])} {_text(o['member_id'])} {_text(clients.get(o['member_id']))}")


@groups_group.command("delete")
@click.argument("group_id", metavar="GROUP")
@click.pass_context
def delete_command(ctx: click.Context, group_id: str) -> None:
    """Delete GROUP and its committed offsets (only a group without members)."""
    async def delete() -> None:
        async with admin_session(settings(ctx)) as client:
            await client.delete_groups([group_id])

    run(ctx, delete())
    click.echo(f"Deleted group {group_id}.")


async def reset_plan(client: Admin, group_id: str, topic: str, partitions: Sequence[int], target: str,
                     offset: int | None) -> dict[tuple[str, int], int]:
    """{tp: new offset}; raises CommandError for an active group or an unknown partition."""
    description = (await client.describe_groups([group_id]))[group_id]
    if description.state not in INACTIVE_STATES:
        raise CommandError(f"group {group_id} is {description.state} with {len(description.members)} member(s): "
                           "offsets can only be reset while it has none (stop its consumers first)")
    existing = await topic_partitions(client.cluster, topic)
    missing = sorted(set(partitions) - set(existing))
    if missing:
        raise CommandError(f"topic {topic!r} has no partition {missing[0]} (it has {len(existing)})")
    tps = [(topic, p) for p in (sorted(set(partitions)) or existing)]
    earliest = await list_offsets(client.cluster, dict.fromkeys(tps, EARLIEST_TIMESTAMP),
                                  timeout_ms=client.default_api_timeout_ms)
    latest = await list_offsets(client.cluster, dict.fromkeys(tps, LATEST_TIMESTAMP),
                                timeout_ms=client.default_api_timeout_ms)
    plan = {}
    for tp in tps:
        low, high = earliest[tp].offset, latest[tp].offset
        if target == "earliest":
            plan[tp] = low
        elif target == "latest":
            plan[tp] = high
        else:
            assert offset is not None
            plan[tp] = min(max(offset, low), high)
    return plan


@groups_group.command("reset-offsets")
@click.argument("group_id", metavar="GROUP")
@click.option("--topic", required=True, metavar="T", help="The topic whose offsets to reset.")
@click.option("--partition", "partitions", type=click.IntRange(min=0), multiple=True, metavar="P",
              help="Only partition P (repeatable)  [default: all]")
@click.option("--to-earliest", is_flag=True, help="Each partition's log start offset.")
@click.option("--to-latest", is_flag=True, help="Each partition's high watermark.")
@click.option("--to-offset", type=click.IntRange(min=0), default=None, metavar="N",
              help="Offset N (clamped to [log start, high watermark]).")
@click.option("--dry-run", is_flag=True, help="Print the new offsets, change nothing.")
@click.pass_context
def reset_offsets_command(ctx: click.Context, group_id: str, topic: str, partitions: tuple[int, ...],
                          to_earliest: bool, to_latest: bool, to_offset: int | None, dry_run: bool) -> None:
    """Set GROUP's committed offsets for --topic T (the group must have no members)."""
    chosen = [name for name, on in (("earliest", to_earliest), ("latest", to_latest),
                                    ("offset", to_offset is not None)) if on]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset N", ctx=ctx)

    async def reset() -> dict[tuple[str, int], int]:
        async with admin_session(settings(ctx)) as client:
            plan = await reset_plan(client, group_id, topic, partitions, chosen[0], to_offset)
            if not dry_run:
                await client.alter_consumer_group_offsets(group_id, plan)
            return plan

    plan = run(ctx, reset())
    click.echo("TOPIC PARTITION NEW-OFFSET")
    for (t, p), o in sorted(plan.items()):
        click.echo(f"{t} {p} {o}")
    if dry_run:
        click.echo("(dry run: nothing changed)", err=True)
