"""The consistency harness (RELIABILITY.md, issue 5 "The consistency harness").

A multi-process test bench: a 3-node `brokerd --quorum` cluster on free 127.0.0.1 ports, idempotent
acks=all producers and from-the-start consumers recording a history (`history`), faults injected
while writes are in flight (`faults`, `proxy`), then a drain, an offline dump of every replica and a
checker (`checker`) that must find zero anomalies. `python3 -m tools.chaos --help` runs it
(`run`); docs/consistency.md explains what is proved and what is not.

Modules: `history` (operations and reads, JSON lines), `logs` (parsing `brokerctl log dump --json`
and HW checkpoints), `checker` (pure functions: history + final logs -> anomalies), `cluster`
(brokerd processes, by PID), `proxy` (per-link TCP proxies that can be cut), `faults` (seeded
schedule and injectors), `workload` (producers and consumers over `client/`), `metrics`
(failover and unavailability figures), `run` (the runner and its report).

Dependency direction (ARCHITECTURE.md §2): imports only `tools`, `client` and `storage`; brokers
are separate processes (`python3 -m broker.main`).
"""
