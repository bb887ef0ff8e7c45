"""Consumer groups (Kafka's classic protocol) for replog's Consumer and Admin.

- `protocol`: the embedded "consumer" protocol bytes (subscription / assignment, versions 0-3).
- `assignors`: range and roundrobin, as Java and kafka-python compute them.
- `membership`: sans-IO member state and the reaction to every group error code.
- `coordinator`: the asyncio driver (find the coordinator, join/sync, heartbeats, commits).
- `errors`: CommitFailedError, GroupFatalError.

Versions. Importing this package adds the group APIs to `client.cluster.CLIENT_API_VERSIONS`
(the table every new connection negotiates from) when that table lacks them. They belong in
that table; until client/cluster.py lists them itself, this keeps the negotiation in one place.
JoinGroup up to 9, SyncGroup 5, Heartbeat 4, LeaveGroup 5 (all flexible versions are plain
schema work here); OffsetCommit 2-9 and OffsetFetch 1-7 (above: topic ids / the batched
groups layout); ListGroups 0-4, DescribeGroups 0-5, DeleteGroups 0-2 (when the schema exists).
"""

from __future__ import annotations

from client.cluster import CLIENT_API_VERSIONS
from client.wire.messages import REQUESTS, ApiKey

DELETE_GROUPS_API_KEY = 42

GROUP_API_VERSIONS: dict[int, tuple[int, int]] = {
    ApiKey.JOIN_GROUP: (0, 9),
    ApiKey.SYNC_GROUP: (0, 5),
    ApiKey.HEARTBEAT: (0, 4),
    ApiKey.LEAVE_GROUP: (0, 5),
    ApiKey.OFFSET_COMMIT: (2, 9),
    ApiKey.OFFSET_FETCH: (1, 7),
    ApiKey.LIST_GROUPS: (0, 4),
    ApiKey.DESCRIBE_GROUPS: (0, 5),
}
if DELETE_GROUPS_API_KEY in REQUESTS:
    GROUP_API_VERSIONS[DELETE_GROUPS_API_KEY] = (0, 2)

for _key, _range in GROUP_API_VERSIONS.items():
    CLIENT_API_VERSIONS.setdefault(_key, _range)
