"""`brokerctl cluster describe [--json]`: cluster id, active controller, brokers and their leader counts.

`--json` prints

    {"cluster_id": str or null, "controller_id": int,
     "brokers": [{"id": int, "host": str, "port": int, "rack": str or null, "leader_count": int}, ...]}

brokers sorted by id; `leader_count` is the number of partitions (of every topic) the broker leads.
Everything comes from one Metadata request for all topics: Admin.describe_topics would add a
ListOffsets round per leader, and fail on a partition without a leader, which a cluster overview
must still show (its partitions simply count for nobody).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import click

from tools.brokerctl_common import Settings, echo_json, run, settings
from tools.brokerctl_topics import admin_session


@click.group("cluster")
def cluster_group() -> None:
    """Inspect the cluster."""


async def describe_cluster(found: Settings) -> dict[str, Any]:
    async with admin_session(found) as client:
        response = await client.cluster.fetch_metadata(None)
    leaders = Counter(p["leader_id"] for t in response["topics"] if not t["error_code"] for p in t["partitions"])
    brokers = sorted(response["brokers"], key=lambda b: b["node_id"])
    return {
        "cluster_id": response.get("cluster_id"),
        "controller_id": response.get("controller_id", -1),
        "brokers": [{"id": b["node_id"], "host": b["host"], "port": b["port"], "rack": b.get("rack"),
                     "leader_count": leaders.get(b["node_id"], 0)} for b in brokers],
    }


@cluster_group.command("describe")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (see the module docstring).")
@click.pass_context
def describe_command(ctx: click.Context, as_json: bool) -> None:
    """Cluster id, controller id, and every broker with its address and leader count."""
    cluster = run(ctx, describe_cluster(settings(ctx)))
    if as_json:
        echo_json(cluster)
        return
    click.echo(f"ClusterId: {cluster['cluster_id']}\tControllerId: {cluster['controller_id']}")
    for broker in cluster["brokers"]:
        rack = f"\tRack: {broker['rack']}" if broker["rack"] else ""
        click.echo(f"Broker: {broker['id']}\tHost: {broker['host']}\tPort: {broker['port']}{rack}\t"
                   f"Leaders: {broker['leader_count']}")
