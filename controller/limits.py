"""Named bounds for the controller's metadata (ARCHITECTURE.md §3 rule 4).

Decoding (`controller.records`, `MetadataImage.from_snapshot`) rejects anything beyond these, so
a corrupt or hostile metadata log entry cannot make a node allocate without bound; the builder
(`controller.metadata.MetadataBuilder`) refuses requests that would exceed them with a Kafka
error code instead of writing a record that every node would then reject.
"""

from __future__ import annotations

# Kafka's topic name rule: 1-249 characters of [a-zA-Z0-9._-], not "." or "..". Used with
# re.fullmatch (a "$" anchor with re.match would also accept a trailing newline).
TOPIC_NAME_LENGTH_MAX = 249
TOPIC_NAME_PATTERN = r"(?!\.\.?\Z)[a-zA-Z0-9._-]{1,249}"

TOPICS_MAX = 10_000                   # topics in the cluster (as broker/topic_store.py)
PARTITIONS_PER_TOPIC_MAX = 10_000     # partitions of one topic (as broker/topic_store.py)
PARTITIONS_MAX = 200_000              # partitions in the cluster, all topics together
REPLICATION_FACTOR_MAX = 32           # replicas per partition (also bounded by the live brokers)
BROKERS_MAX = 1_000                   # registered broker ids
BROKER_ID_MAX = 2**31 - 1             # broker ids are int32 on the wire
LISTENERS_MAX = 16                    # endpoints per broker registration
HOST_LENGTH_MAX = 255                 # DNS name length
LISTENER_NAME_LENGTH_MAX = 64
RACK_LENGTH_MAX = 255
TOPIC_CONFIGS_MAX = 64                # config overrides per topic
CONFIG_NAME_LENGTH_MAX = 255
CONFIG_VALUE_LENGTH_MAX = 4096

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# One encoded metadata record (the data of one Raft entry). The largest legitimate record is a
# broker fencing that moves every partition the broker touched (~120 bytes per partition).
RECORD_BYTES_MAX = 16 << 20
RECORDS_PER_BATCH_MAX = 10_000        # records decoded from one batch (encode_batch/decode_batch)
SNAPSHOT_BYTES_MAX = 256 << 20        # one encoded MetadataImage

# Producer ids are handed out in blocks, as Kafka's ProducerIdManager (block size 1000).
PRODUCER_ID_BLOCK_SIZE = 1000
PRODUCER_ID_BLOCK_SIZE_MAX = 1_000_000
PRODUCER_ID_MAX = INT64_MAX           # the last producer id that may ever be issued
