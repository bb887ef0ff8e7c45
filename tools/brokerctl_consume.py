"""`brokerctl consume TOPIC`: print records as they arrive (client.Consumer, manual assignment).

    brokerctl consume orders --from-beginning --max-messages 10 --timeout-ms 5000 --key-separator :

Where it starts (like kafka-console-consumer): by default every partition from its end, so only
records produced after the start are printed; `--from-beginning` from each partition's log start;
`--partition P` reads only P, and `--offset O` (needs `--partition`) starts P at offset O, or at
`earliest` / `latest`. The start positions are resolved (ListOffsets) before the first fetch. An
offset outside [log start, high watermark] is an error, not a silent reset.

With `--group G` it consumes as a member of consumer group G (client/group/): the group assigns
the partitions (other members of G share them), each partition starts at G's committed offset, or,
without one, at its end (`--from-beginning`: its log start), and the positions are committed
every 5 s and when the command stops (then it leaves the group). `--partition` / `--offset` do not
apply to a group.

When it stops: after `--max-messages N` records, or when no record arrived for `--timeout-ms T`
(counted from the start, then from the last record), or on Ctrl-C. Without either option it
follows the topic until interrupted. These three are success (exit 0, and one summary line on
stderr, "Processed a total of N messages", as kafka-console-consumer); an error ends the run with
its one line and exit code 1 instead.

Output, one record per line, records of a partition in offset order:

* text (default): the value; with `--print-key` or `--key-separator SEP`, `key SEP value` (SEP
  defaults to a tab). Bytes are written as they are; a null key or value prints as `null`.
* `--json`: one JSON object per line (JSON Lines, ASCII only):
  `{"topic", "partition", "offset", "timestamp", "key", "value", "headers": [{"key", "value"}]}`,
  where key, value and header values are null, `{"utf8": text}` when the bytes are valid UTF-8, or
  `{"base64": standard padded base64}` -- the encoding `brokerctl log dump --records` uses
  (docs/log-dump-format.md), so the two can be compared. Header keys are strings.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import IO, Any

import click

from client import Consumer, ConsumerRecord
from client.errors import OffsetOutOfRangeError
from tools.brokerctl_common import (
    API_TIMEOUT_MS,
    CommandError,
    Settings,
    render_bytes,
    run,
    settings,
    started,
    to_json_line,
    topic_partitions,
)

POLL_WAIT_MS_MAX = 500  # one poll's wait: the idle timeout is checked at least this often
NULL_TEXT = b"null"


@dataclass
class ConsumeOptions:
    from_beginning: bool = False
    partition: int | None = None
    offset: str | None = None  # "earliest", "latest" or a non-negative integer
    max_messages: int | None = None
    timeout_ms: int | None = None
    as_json: bool = False
    key_separator: bytes | None = None  # None: values only
    group: str | None = None


@dataclass
class ConsumeProgress:
    count: int = 0
    finished: bool = False  # stopped by --max-messages, --timeout-ms or Ctrl-C (not by an error)


def record_json(record: ConsumerRecord) -> dict[str, Any]:
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset,
            "timestamp": record.timestamp, "key": render_bytes(record.key), "value": render_bytes(record.value),
            "headers": [{"key": key, "value": render_bytes(value)} for key, value in record.headers]}


def record_text(record: ConsumerRecord, key_separator: bytes | None) -> bytes:
    value = NULL_TEXT if record.value is None else record.value
    if key_separator is None:
        return value + b"\n"
    key = NULL_TEXT if record.key is None else record.key
    return key + key_separator + value + b"\n"


def _write(out: IO[bytes], records: list[ConsumerRecord], options: ConsumeOptions) -> None:
    if options.as_json:
        data = "".join(to_json_line(record_json(r)) + "\n" for r in records).encode("ascii")
    else:
        data = b"".join(record_text(r, options.key_separator) for r in records)
    out.write(data)
    out.flush()


async def _start_positions(consumer: Consumer, topic: str, options: ConsumeOptions) -> None:
    partitions = await topic_partitions(consumer.cluster, topic)
    if options.partition is not None and options.partition not in partitions:
        raise CommandError(f"topic {topic!r} has no partition {options.partition} (it has {len(partitions)})")
    tps = [(topic, p) for p in partitions if options.partition in (None, p)]
    consumer.assign(tps)
    if options.offset is not None and options.offset.isdigit():
        consumer.seek(tps[0], int(options.offset))
    elif options.from_beginning or options.offset == "earliest":
        consumer.seek_to_beginning()
    else:
        consumer.seek_to_end()
    for tp in tps:  # resolve now: "the end" is the end at the start, not at the first fetch
        await consumer.position(tp)


async def consume(found: Settings, topic: str, options: ConsumeOptions, out: IO[bytes],
                  progress: ConsumeProgress) -> None:
    if options.group is not None:
        reset = "earliest" if options.from_beginning else "latest"
        client = Consumer(found.bootstrap_server, group_id=options.group, auto_offset_reset=reset,
                          default_api_timeout_ms=API_TIMEOUT_MS, **found.client_config())
    else:
        client = Consumer(found.bootstrap_server, auto_offset_reset="none", default_api_timeout_ms=API_TIMEOUT_MS,
                          **found.client_config())
    async with started(client, found) as consumer:
        if options.group is not None:
            await topic_partitions(consumer.cluster, topic)  # an unknown topic fails the command
            consumer.subscribe([topic])
        else:
            await _start_positions(consumer, topic, options)
        # Ctrl-C: asyncio.run cancels this, its main task. Following a topic until interrupted is
        # the normal way to stop, as with kafka-console-consumer: close, summarize, exit 0.
        with contextlib.suppress(asyncio.CancelledError):
            await _poll_loop(consumer, topic, options, out, progress)
        progress.finished = True


async def _poll_loop(consumer: Consumer, topic: str, options: ConsumeOptions, out: IO[bytes],
                     progress: ConsumeProgress) -> None:
    loop = asyncio.get_running_loop()
    idle_s = None if options.timeout_ms is None else options.timeout_ms / 1000
    idle_deadline = None if idle_s is None else loop.time() + idle_s
    while options.max_messages is None or progress.count < options.max_messages:
        wait_ms = POLL_WAIT_MS_MAX
        if idle_deadline is not None:
            left_ms = int((idle_deadline - loop.time()) * 1000)
            if left_ms <= 0:
                return
            wait_ms = min(wait_ms, left_ms)
        limit = None if options.max_messages is None else options.max_messages - progress.count
        try:
            records = await consumer.poll(timeout_ms=wait_ms, max_records=limit)
        except OffsetOutOfRangeError as exc:
            raise CommandError(f"{exc} (the offset is outside the partition's log: see "
                               f"`brokerctl topics describe {topic}`)") from exc
        if records:
            _write(out, records, options)
            progress.count += len(records)
            if idle_s is not None:
                idle_deadline = loop.time() + idle_s


def _check_offset(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value in ("earliest", "latest") or value.isdigit():
        return value
    raise click.BadParameter(f"{value!r} is not a non-negative integer, 'earliest' or 'latest'", ctx=ctx,
                             param=param)


@click.command("consume")
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at each partition's log start  [default: its end]")
@click.option("--partition", type=click.IntRange(min=0), default=None, metavar="P",
              help="Read only partition P  [default: all]")
@click.option("--offset", callback=_check_offset, default=None, metavar="O",
              help="With --partition: start at offset O, 'earliest' or 'latest'.")
@click.option("--max-messages", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N records.")
@click.option("--timeout-ms", type=click.IntRange(min=0), default=None, metavar="T",
              help="Stop when no record arrived for T ms.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: topic, partition, offset, timestamp, key, "
                                                      "value, headers (see the module docstring).")
@click.option("--print-key", is_flag=True, help="Text output `key SEP value`.")
@click.option("--group", default=None, metavar="G",
              help="Consume as a member of consumer group G (committed offsets, shared partitions).")
@click.option("--key-separator", metavar="SEP", default=None,
              help="The SEP of --print-key (implies it)  [default: a tab]")
@click.pass_context
def consume_command(ctx: click.Context, topic: str, from_beginning: bool, partition: int | None, offset: str | None,
                    max_messages: int | None, timeout_ms: int | None, as_json: bool, print_key: bool,
                    key_separator: str | None, group: str | None) -> None:
    """Print the records of TOPIC: new ones by default, or from --from-beginning / --offset."""
    if offset is not None and partition is None:
        raise click.UsageError("--offset needs --partition", ctx=ctx)
    if group is not None and (partition is not None or offset is not None):
        raise click.UsageError("--group assigns the partitions: drop --partition / --offset", ctx=ctx)
    if group is not None and not group:
        raise click.UsageError("--group needs a non-empty name", ctx=ctx)
    if offset is not None and from_beginning:
        raise click.UsageError("--offset and --from-beginning exclude each other", ctx=ctx)
    if as_json and (print_key or key_separator is not None):
        raise click.UsageError("--json prints keys already: drop --print-key / --key-separator", ctx=ctx)
    separator = None
    if print_key or key_separator is not None:
        separator = ("\t" if key_separator is None else key_separator).encode("utf-8", "surrogateescape")
    options = ConsumeOptions(from_beginning, partition, offset, max_messages, timeout_ms, as_json, separator, group)
    progress = ConsumeProgress()
    out = click.get_binary_stream("stdout")
    try:
        run(ctx, consume(settings(ctx), topic, options, out, progress))
    finally:
        if progress.finished:
            click.echo(f"Processed a total of {progress.count} messages", err=True)
