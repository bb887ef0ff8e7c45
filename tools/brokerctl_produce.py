"""`brokerctl produce TOPIC`: one record per line of stdin (client.Producer).

    printf 'k1:hello\\nk2:world\\n' | brokerctl produce orders --key-separator : --acks all --compression lz4

Contract:

* A line ends at "\\n" ("\\r\\n" too: the "\\r" is dropped); the last line needs no newline. An empty
  line is a record with an empty value, as with kafka-console-producer.
* `--key-separator SEP`: the bytes before the first SEP are the key, the rest is the value; a line
  without SEP is not sent and counts as failed. Without it every record has a null key (keyless
  records go to one sticky partition per batch, KIP-480); keys are partitioned by murmur2, as Java.
  `--partition P` sends every record to partition P.
* The topic must exist: `produce` never auto-creates one (the Metadata check asks the broker not to).
* Outcomes: every record's delivery is awaited (`--acks all` by default; with `--acks 0` delivered
  means written to the connection). The first ERRORS_SHOWN_MAX failures are reported on stderr with
  their line numbers, and one summary line ends the run (stderr). Exit code 0 when every line was
  delivered, 1 when any failed or the run stopped early, 2 for bad arguments.
* Bounds: stdin is read in chunks of READ_CHUNK_BYTES by a daemon thread with at most
  READ_AHEAD_CHUNKS chunks queued (a blocking read must neither stall the producer's event loop --
  an interactively typed line goes out at once -- nor keep the process alive after Ctrl-C); a line
  longer than LINE_BYTES_MAX is not sent and counts as failed; records awaiting delivery are bounded
  by the producer's buffer_memory (the reader waits for room, up to max_block_ms).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import click

from client import Producer
from client.errors import KafkaError
from tools.brokerctl_common import (
    EXIT_FAILED,
    EXIT_OK,
    REQUEST_TIMEOUT_MS,
    CommandError,
    Settings,
    describe_error,
    run,
    settings,
    started,
    topic_partitions,
)

READ_CHUNK_BYTES = 64 * 1024
READ_AHEAD_CHUNKS = 4
LINE_BYTES_MAX = 1024 * 1024  # the producer's max_request_size: a longer record could not be sent
ERRORS_SHOWN_MAX = 10
DELIVERY_TIMEOUT_MS = 2 * REQUEST_TIMEOUT_MS  # Kafka's rule: >= linger + request timeout
MAX_BLOCK_MS = REQUEST_TIMEOUT_MS
PRODUCE_LINGER_MS = 5


class LineSplitter:
    """Bytes in, numbered lines out: `feed(chunk)` and `end()` return [(line_no, line)], where line is
    None for a line longer than `line_bytes_max` (its bytes are dropped as they arrive)."""

    def __init__(self, line_bytes_max: int) -> None:
        self.line_bytes_max = line_bytes_max
        self.line_no = 0
        self._partial = bytearray()
        self._too_long = False

    def feed(self, chunk: bytes) -> list[tuple[int, bytes | None]]:
        out = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            self._add(chunk, start, end)
            out.append(self._finish())
            start = end + 1
        self._add(chunk, start, len(chunk))
        return out

    def end(self) -> list[tuple[int, bytes | None]]:
        """The last line, when the input does not end with a newline."""
        return [self._finish()] if self._partial or self._too_long else []

    def _add(self, chunk: bytes, start: int, end: int) -> None:
        if self._too_long:
            return
        if len(self._partial) + end - start > self.line_bytes_max + 1:  # + 1: room for a "\r"
            self._too_long = True
            self._partial.clear()
        else:
            self._partial += chunk[start:end]

    def _finish(self) -> tuple[int, bytes | None]:
        self.line_no += 1
        line = None if self._too_long else bytes(self._partial).removesuffix(b"\r")
        if line is not None and len(line) > self.line_bytes_max:  # kept only for a "\r" that did not come
            line = None
        self._partial.clear()
        self._too_long = False
        return self.line_no, line


def _raw_reader(stream: IO[bytes]) -> Callable[[int], bytes]:
    """os.read on the stream's descriptor when it has one: a daemon thread blocked in a buffered
    stream's read holds the buffer's lock, and the interpreter aborts at exit when it finds it taken
    ("could not acquire lock ... at interpreter shutdown"). Else (in-memory streams) read1."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both OSError and ValueError
        return getattr(stream, "read1", stream.read)
    return functools.partial(os.read, fd)


class StdinReader:
    """Chunks of a binary stream, read by a daemon thread (see the module docstring)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._room = threading.Semaphore(READ_AHEAD_CHUNKS)
        self._read = _raw_reader(stream)
        threading.Thread(target=self._run, name="brokerctl-stdin", daemon=True).start()

    def _run(self) -> None:
        while True:
            self._room.acquire()
            item: bytes | BaseException
            try:
                item = self._read(READ_CHUNK_BYTES)
            except Exception as exc:  # handed to the event loop, which reports it
                item = exc
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: the command ended without reading everything
                return
            if not isinstance(item, bytes) or not item:
                return

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            self._room.release()
            if isinstance(item, BaseException):
                raise CommandError(f"cannot read stdin: {item}") from item
            if not item:
                return
            yield item


@dataclass
class ProduceSummary:
    """Counts of one run; record futures report here as they complete."""

    started: bool = False
    lines: int = 0
    delivered: int = 0
    failed: int = 0
    pending: set[asyncio.Future[Any]] = field(default_factory=set)

    def fail(self, line_no: int, message: str) -> None:
        self.failed += 1
        if self.failed <= ERRORS_SHOWN_MAX:
            click.echo(f"brokerctl: line {line_no}: {message}", err=True)
        elif self.failed == ERRORS_SHOWN_MAX + 1:
            click.echo(f"brokerctl: (only the first {ERRORS_SHOWN_MAX} failures are shown)", err=True)

    def track(self, line_no: int, future: asyncio.Future[Any]) -> None:
        self.pending.add(future)
        future.add_done_callback(lambda f: self._outcome(line_no, f))

    def _outcome(self, line_no: int, future: asyncio.Future[Any]) -> None:
        self.pending.discard(future)
        if future.cancelled():
            self.fail(line_no, "not delivered: cancelled")
            return
        exc = future.exception()
        if exc is None:
            self.delivered += 1
        elif isinstance(exc, KafkaError):
            self.fail(line_no, f"not delivered: {describe_error(exc)}")
        else:
            self.fail(line_no, f"not delivered: {type(exc).__name__}: {exc}")

    def line(self, topic: str, acks: str) -> str:
        text = f"brokerctl: produced {self.delivered} of {self.lines} records to topic {topic} (acks={acks})"
        if self.failed:
            text += f"; {self.failed} failed"
        not_done = self.lines - self.delivered - self.failed
        if not_done:
            text += f"; {not_done} without an outcome (the run stopped early)"
        return text


def _split_key(line: bytes, separator: bytes | None) -> tuple[bytes | None, bytes] | None:
    if separator is None:
        return None, line
    key, sep, value = line.partition(separator)
    return (key, value) if sep else None


async def produce(found: Settings, topic: str, stdin: IO[bytes], summary: ProduceSummary, *,
                  separator: bytes | None, partition: int | None, acks: str, compression: str) -> None:
    client = Producer(found.bootstrap_server, acks=acks, compression=compression, linger_ms=PRODUCE_LINGER_MS,
                      delivery_timeout_ms=DELIVERY_TIMEOUT_MS, max_block_ms=MAX_BLOCK_MS, **found.client_config())
    async with started(client, found) as producer:
        partitions = await topic_partitions(producer.cluster, topic)
        if partition is not None and partition not in partitions:
            raise CommandError(f"topic {topic!r} has no partition {partition} (it has {len(partitions)})")
        await producer.partitions_for(topic)  # the topic exists: keep its metadata fresh from now on
        summary.started = True
        splitter = LineSplitter(LINE_BYTES_MAX)
        async for chunk in StdinReader(stdin).chunks():
            for line_no, line in splitter.feed(chunk):
                await _send(producer, summary, topic, line_no, line, separator, partition)
        for line_no, line in splitter.end():
            await _send(producer, summary, topic, line_no, line, separator, partition)
        await producer.flush()
    if summary.pending:  # every future has its outcome once the producer is closed; let callbacks run
        await asyncio.wait(list(summary.pending))
    await asyncio.sleep(0)


async def _send(producer: Producer, summary: ProduceSummary, topic: str, line_no: int, line: bytes | None,
                separator: bytes | None, partition: int | None) -> None:
    summary.lines += 1
    if line is None:
        summary.fail(line_no, f"not sent: longer than {LINE_BYTES_MAX} bytes")
        return
    split = _split_key(line, separator)
    if split is None:
        shown = separator.decode("utf-8", "backslashreplace")  # type: ignore[union-attr]
        summary.fail(line_no, f"not sent: no key separator {shown!r} in the line")
        return
    key, value = split
    try:
        future = await producer.send_when_ready(topic, value, key, partition=partition)
    except KafkaError as exc:
        summary.fail(line_no, f"not sent: {describe_error(exc)}")
        return
    summary.track(line_no, future)


@click.command("produce")
@click.argument("topic")
@click.option("--key-separator", metavar="SEP", default=None,
              help="Split each line at the first SEP into key and value  [default: no key]")
@click.option("--partition", type=click.IntRange(min=0), default=None, metavar="P",
              help="Send every record to partition P  [default: by key, keyless records sticky]")
@click.option("--acks", type=click.Choice(["all", "1", "0"]), default="all", show_default=True,
              help="Replica acknowledgements a record waits for.")
@click.option("--compression", type=click.Choice(["none", "lz4", "gzip"]), default="none", show_default=True,
              help="Batch compression.")
@click.pass_context
def produce_command(ctx: click.Context, topic: str, key_separator: str | None, partition: int | None, acks: str,
                    compression: str) -> None:
    """Send each line of stdin to TOPIC as one record; a summary goes to stderr.

    Exit code 0 when every record was delivered, 1 otherwise.
    """
    if key_separator == "":
        raise click.BadParameter("must not be empty", ctx=ctx, param_hint="'--key-separator'")
    separator = key_separator.encode("utf-8", "surrogateescape") if key_separator is not None else None
    summary = ProduceSummary()
    stdin = click.get_binary_stream("stdin")
    try:
        run(ctx, produce(settings(ctx), topic, stdin, summary, separator=separator, partition=partition,
                         acks=acks, compression=compression))
    finally:
        if summary.started:
            click.echo(summary.line(topic, acks), err=True)
    ctx.exit(EXIT_FAILED if summary.failed or summary.delivered < summary.lines else EXIT_OK)
