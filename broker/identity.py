"""The data directory's owner: an exclusive lock and an identity file.

* `.lock`: held with `flock(LOCK_EX | LOCK_NB)` for the life of the process, so two brokers can
  never open the same directory (the kernel drops the lock when the process dies, even on
  `kill -9`, so a stale lock never blocks a restart).
* `meta.properties` (Kafka's name and `key=value` format): `version=1`, `node.id`, `cluster.id`,
  and `cluster.id.confirmed=true` once the cluster id is the metadata quorum's. Written atomically
  on first start; on later starts a different `node.id` is refused. A cluster id that no quorum
  confirmed (a single node's own, `--no-quorum`) is provisional: the quorum's id replaces it
  (`confirm_cluster_id`); a confirmed id of another cluster is refused.
"""

from __future__ import annotations

import base64
import fcntl
import os
import uuid

from storage.checkpoint import write_atomic
from storage.files import FileSystem

LOCK_FILE = ".lock"
META_PROPERTIES = "meta.properties"
CONFIRMED_KEY = "cluster.id.confirmed"


class IdentityError(RuntimeError):
    """The data directory cannot be used by this node (locked, or another node's)."""


class DataDirLock:
    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IdentityError(f"data directory {os.path.dirname(self.path)} is locked by another process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _parse_properties(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def new_cluster_id() -> str:
    """Kafka-style cluster id: 22 characters of url-safe base64 of a random UUID."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _read_properties(fs: FileSystem, path: str) -> dict[str, str]:
    return _parse_properties(fs.read_file(path).decode("utf-8", "replace")) if fs.exists(path) else {}


def confirm_cluster_id(data_dir: str, node_id: int, cluster_id: str, fs: FileSystem | None = None) -> None:
    """Record the quorum's cluster id in meta.properties (confirmed). IdentityError if the directory is
    already confirmed for another cluster; a provisional (unconfirmed) id is overwritten."""
    fs = fs or FileSystem()
    path = os.path.join(data_dir, META_PROPERTIES)
    props = _read_properties(fs, path)
    stored = props.get("cluster.id")
    if props.get(CONFIRMED_KEY) == "true":
        if stored != cluster_id:
            raise IdentityError(f"data directory {data_dir} belongs to cluster {stored}, not {cluster_id}")
        return
    write_atomic(fs, path, f"version=1\nnode.id={node_id}\ncluster.id={cluster_id}\n{CONFIRMED_KEY}=true\n".encode())


def ensure_identity(data_dir: str, node_id: int, fs: FileSystem | None = None) -> str:
    """Create or check meta.properties; returns the cluster id. IdentityError on a node id mismatch."""
    fs = fs or FileSystem()
    path = os.path.join(data_dir, META_PROPERTIES)
    if fs.exists(path):
        props = _parse_properties(fs.read_file(path).decode("utf-8", "replace"))
        stored = props.get("node.id")
        if stored is None or not stored.lstrip("-").isdigit():
            raise IdentityError(f"{path} is malformed (no valid node.id)")
        if int(stored) != node_id:
            raise IdentityError(f"data directory {data_dir} belongs to node {stored}, not node {node_id}")
        return props.get("cluster.id") or new_cluster_id()
    cluster_id = new_cluster_id()
    write_atomic(fs, path, f"version=1\nnode.id={node_id}\ncluster.id={cluster_id}\n".encode())
    return cluster_id
