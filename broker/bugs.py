"""Deliberately broken variants of the broker, for the consistency checker's canaries (RELIABILITY.md:
"a checker that has never caught a bug proves nothing"). Never set in production.

`REPLOG_BUG` is a comma-separated list, read once at import:

* `hw_from_leo`: a leader's high watermark is its own log end (ignores the followers).
* `ignore_divergence`: followers send no last fetched epoch, so a divergent tail is never truncated.
* `ack_after_demotion`: a delayed acks=all produce completes once the high watermark passes its
  offset even if this broker stopped leading meanwhile (the write may have been truncated).

brokerd logs a warning at start-up when any is set.
"""

from __future__ import annotations

import os

KNOWN = frozenset({"hw_from_leo", "ignore_divergence", "ack_after_demotion"})
ACTIVE = frozenset(b for b in os.environ.get("REPLOG_BUG", "").split(",") if b)

HW_FROM_LEO = "hw_from_leo" in ACTIVE
IGNORE_DIVERGENCE = "ignore_divergence" in ACTIVE
ACK_AFTER_DEMOTION = "ack_after_demotion" in ACTIVE
