"""Consumer groups, broker side (issue 6): the classic group protocol and committed offsets.

* `records`: the `__consumer_offsets` key/value byte layouts (Kafka's own: offset commit key v1 /
  value v3, group metadata key v2 / value v3), encode and decode.
* `state`: the sans-IO group state machine (members, generations, protocol selection, leader,
  session and rebalance timeouts as `now_ms` arguments); calls return actions.
* `coordinator`: the asyncio driver: shards = the `__consumer_offsets` partitions this broker
  leads, loading/unloading on role changes, persistence through the partition leader's log,
  timers.

docs/groups.md describes the whole design.
"""
