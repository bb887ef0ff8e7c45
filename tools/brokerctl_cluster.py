"""`brokerctl cluster describe [--json]`: cluster id, active controller, brokers and their leader counts;
`brokerctl cluster up --nodes N --dir DIR` / `cluster down --dir DIR`: a local quorum cluster.

`--json` prints

    {"cluster_id": str or null, "controller_id": int,
     "brokers": [{"id": int, "host": str, "port": int, "rack": str or null, "leader_count": int}, ...]}

brokers sorted by id; `leader_count` is the number of partitions (of every topic) the broker leads.
Everything comes from one Metadata request for all topics: Admin.describe_topics would add a
ListOffsets round per leader, and fail on a partition without a leader, which a cluster overview
must still show (its partitions simply count for nobody).

With `--dir DIR` (a cluster started by `cluster up`) or `--voters ID@HOST:PORT,...` it asks the active
controller instead (the internal describe_quorum operation) and `--json` prints

    {"cluster_id": str or null,
     "controller": {"leader": int, "epoch": int, "voters": [{"id": int, "log_end_offset": int, "lag": int}]},
     "brokers": [{"id": int, "host": str, "port": int, "fenced": bool, "leaders": int}, ...]}

`cluster up` starts N combined (broker + controller) `brokerd --quorum` processes on free ports,
data and logs under DIR/node-I/, waits until each serves, and records them in DIR/cluster.json;
`cluster down` stops them (SIGTERM, SIGKILL after 20 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import click
import orjson

from client.wire.codec import encode_nullable_string
from client.wire.errors import ErrorCode
from client.wire.messages import controller_api
from tools.brokerctl_common import CommandError, Settings, echo_json, run, settings
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


CLUSTER_FILE = "cluster.json"
UP_TIMEOUT_S = 30.0
DOWN_TIMEOUT_S = 20.0


DESCRIBE_DEADLINE_S = 5.0
_SIZE = struct.Struct(">i")


def parse_voters(text: str) -> dict[int, tuple[str, int]]:
    voters: dict[int, tuple[str, int]] = {}
    for item in text.split(","):
        node, _, address = item.strip().partition("@")
        host, _, port = address.rpartition(":")
        if not node.isdigit() or not host or not port.isdigit():
            raise ValueError(f"expected ID@HOST:PORT, got {item.strip()!r}")
        voters[int(node)] = (host, int(port))
    return voters


def _controller_request(address: tuple[str, int], op: str, timeout_s: float) -> tuple[int, int, dict[str, Any]]:
    """One ControllerRequest (API key 1001, docs/controller.md) -> (error_code, leader_id, payload)."""
    out: list[Any] = [struct.pack(">hhi", controller_api.API_KEY, 0, 1), encode_nullable_string("brokerctl")]
    controller_api.REQUEST.encode_into({"op": op, "payload": orjson.dumps({})}, 0, out)
    body = b"".join(bytes(p) for p in out)
    with socket.create_connection(address, timeout=timeout_s) as sock:
        sock.sendall(_SIZE.pack(len(body)) + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + _SIZE.unpack_from(data)[0]:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("controller closed the connection")
            data += chunk
    response, _ = controller_api.RESPONSE.decode(data[4:], 0, 4)
    raw = response["payload"]
    return response["error_code"], response["leader_id"], orjson.loads(raw) if raw else {}


def ask_active_controller(voters: dict[int, tuple[str, int]], op: str) -> dict[str, Any]:
    """Try the voters (following NOT_CONTROLLER's leader id) until the active controller answers."""
    deadline = time.monotonic() + DESCRIBE_DEADLINE_S
    order = sorted(voters)
    target, last = order[0], "no attempt"
    while time.monotonic() < deadline:
        try:
            code, leader, payload = _controller_request(voters[target], op, 1.0)
        except (OSError, ValueError) as exc:
            code, leader, payload, last = -1, -1, {}, f"{target}: {exc}"
        if code == ErrorCode.NONE:
            return payload
        if code == ErrorCode.NOT_CONTROLLER and leader in voters and leader != target:
            target = leader
            continue
        if code not in (-1, ErrorCode.NOT_CONTROLLER):
            raise CommandError(f"controller {target}: error {code} {payload.get('message', '')}")
        last = last if code == -1 else f"{target}: NOT_CONTROLLER"
        target = order[(order.index(target) + 1) % len(order)]
        time.sleep(0.05)
    raise CommandError(f"no active controller among {_voters_text(voters)} ({last})")


async def describe_quorum(voters: dict[int, tuple[str, int]], bootstrap: str | None) -> dict[str, Any]:
    quorum = await asyncio.to_thread(ask_active_controller, voters, "describe_quorum")
    cluster_id = None
    if bootstrap:
        try:
            cluster_id = (await describe_cluster(Settings(bootstrap)))["cluster_id"]
        except Exception:
            cluster_id = None
    return {"cluster_id": cluster_id,
            "controller": {"leader": quorum["leader"], "epoch": quorum["epoch"],
                           "voters": [{"id": v["id"], "log_end_offset": v["log_end_offset"], "lag": v["lag"]}
                                      for v in quorum["voters"]]},
            "brokers": quorum["brokers"]}


def _voters_text(voters: dict[int, tuple[str, int]]) -> str:
    return ",".join(f"{i}@{h}:{p}" for i, (h, p) in sorted(voters.items()))


def _read_cluster_file(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, CLUSTER_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"no cluster in {directory}: cannot read {path}: {exc}") from None


@cluster_group.command("describe")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (see the module docstring).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="A cluster started by `cluster up`.")
@click.option("--voters", help="Controller quorum ID@HOST:PORT,...: ask the active controller.")
@click.pass_context
def describe_command(ctx: click.Context, as_json: bool, directory: str | None, voters: str | None) -> None:
    """Cluster id, controller id, and every broker with its address and leader count."""
    if directory or voters:
        bootstrap = None
        if directory:
            doc = _read_cluster_file(directory)
            voters = voters or doc["voters"]
            bootstrap = doc["nodes"][0]["listen"] if doc.get("nodes") else None
        try:
            voter_map = parse_voters(voters)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--voters'") from None
        quorum = run(ctx, describe_quorum(voter_map, bootstrap))
        if as_json:
            echo_json(quorum)
            return
        controller = quorum["controller"]
        click.echo(f"ClusterId: {quorum['cluster_id']}\tController: {controller['leader']}\t"
                   f"Epoch: {controller['epoch']}")
        for v in controller["voters"]:
            click.echo(f"Voter: {v['id']}\tLogEndOffset: {v['log_end_offset']}\tLag: {v['lag']}")
        for b in quorum["brokers"]:
            click.echo(f"Broker: {b['id']}\tHost: {b['host']}\tPort: {b['port']}\tFenced: {b['fenced']}\t"
                       f"Leaders: {b['leaders']}")
        return
    cluster = run(ctx, describe_cluster(settings(ctx)))
    if as_json:
        echo_json(cluster)
        return
    click.echo(f"ClusterId: {cluster['cluster_id']}\tControllerId: {cluster['controller_id']}")
    for broker in cluster["brokers"]:
        rack = f"\tRack: {broker['rack']}" if broker["rack"] else ""
        click.echo(f"Broker: {broker['id']}\tHost: {broker['host']}\tPort: {broker['port']}{rack}\t"
                   f"Leaders: {broker['leader_count']}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@cluster_group.command("up")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True, help="Combined nodes to start.")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False), help="Data and logs.")
def up_command(nodes: int, directory: str) -> None:
    """Start a local cluster of combined broker+controller nodes (brokerd --quorum) on free ports."""
    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, CLUSTER_FILE)):
        raise click.UsageError(f"{directory} already holds a cluster (run `cluster down --dir {directory}`)")
    os.makedirs(directory, exist_ok=True)
    ids = list(range(1, nodes + 1))
    listen = {i: f"127.0.0.1:{_free_port()}" for i in ids}
    controller = {i: f"127.0.0.1:{_free_port()}" for i in ids}
    voters = ",".join(f"{i}@{controller[i]}" for i in ids)
    procs = {}
    for i in ids:
        node_dir = os.path.join(directory, f"node-{i}")
        os.makedirs(node_dir, exist_ok=True)
        with open(os.path.join(node_dir, "brokerd.log"), "ab") as log_file:
            procs[i] = subprocess.Popen(
                [sys.executable, "-m", "broker.main", "--quorum", "--node-id", str(i), "--data-dir",
                 os.path.join(node_dir, "data"), "--listen", listen[i], "--controller-listen", controller[i],
                 "--voters", voters], stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
    doc = {"voters": voters, "nodes": [{"id": i, "pid": procs[i].pid, "listen": listen[i],
                                        "controller": controller[i]} for i in ids]}
    with open(os.path.join(directory, CLUSTER_FILE), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    deadline = time.monotonic() + UP_TIMEOUT_S
    for i in ids:
        log_path = os.path.join(directory, f"node-{i}", "brokerd.log")
        while True:
            with open(log_path, "rb") as f:
                text = f.read().decode(errors="replace")
            if f"listening on {listen[i]}" in text:
                break
            if procs[i].poll() is not None or time.monotonic() > deadline:
                _stop_pids([n["pid"] for n in doc["nodes"]])
                os.remove(os.path.join(directory, CLUSTER_FILE))
                raise CommandError(f"node {i} did not start; see {log_path}")
            time.sleep(0.05)
    click.echo(f"bootstrap: {','.join(listen[i] for i in ids)}")
    click.echo(f"voters: {voters}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"broker.main" in f.read()
    except OSError:
        return False


def _stop_pids(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT_S
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@cluster_group.command("down")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False), help="As given to `up`.")
def down_command(directory: str) -> None:
    """Stop a cluster started by `cluster up` (SIGTERM; SIGKILL after 20 s). Data stays in DIR."""
    doc = _read_cluster_file(directory)
    _stop_pids([int(n["pid"]) for n in doc.get("nodes", [])])
    os.remove(os.path.join(directory, CLUSTER_FILE))
    click.echo(f"stopped {len(doc.get('nodes', []))} nodes")
