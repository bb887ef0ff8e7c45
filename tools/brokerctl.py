"""`brokerctl`: the operator's command line.

Online commands (they talk to a cluster through replog's client, `client/`; docs/brokerctl.md):

    brokerctl [-b HOST:PORT] [--connect-timeout-ms MS] [-v] COMMAND ...
    topics create|list|describe|alter|delete    tools/brokerctl_topics.py
    produce TOPIC / consume TOPIC                tools/brokerctl_produce.py, tools/brokerctl_consume.py
    cluster describe                             tools/brokerctl_cluster.py
    groups list|describe|delete|reset-offsets    tools/brokerctl_groups.py

`-b` defaults to $REPLOG_BOOTSTRAP, else 127.0.0.1:9092. Their error contract (one stderr line,
exit codes 1 / 2 / 130, never a traceback) is in tools/brokerctl_common.py.

The offline command, defined here:

`brokerctl log dump PATH [--json] [--records] [--max-batch-bytes N]` reads a partition directory
(every `NNNNNNNNNNNNNNNNNNNN.log` segment, in base-offset order) or one `.log` segment file and
prints one entry per record batch, verifying the CRC-32C of every batch. The JSON Lines output is a
stable interface used by the replica consistency checks; its schema is documented in
`docs/log-dump-format.md` (keep the two in step; changes are additive only).

Contract:

* Memory is bounded by `--max-batch-bytes`: batches are read whole, one at a time, with positional
  reads (a 1 GiB segment is never loaded at once). A length field asking for more than that bound,
  or for less than a batch header, is an impossible length (`bad_length`): the segment's dump
  stops there, since nothing after a bad length can be framed.
* A segment whose last bytes are a prefix of a batch (a write cut by a crash) ends with a
  `torn_tail` entry. That is what recovery truncates; it is not corruption.
* Exit codes: 0 the log is clean (torn tails allowed); 1 something is corrupt (a batch with a bad
  CRC or a magic other than 2, or a bad length), reported only after everything was printed;
  2 a usage, path or I/O error (one line on stderr, no traceback).
* Files are opened read-only with `os.open`/`os.pread`, not through `storage.files`, whose
  `FileSystem.open` opens read-write: a dump must work on a read-only copy of a stopped node and
  must never create or modify a file.

Dependency direction (ARCHITECTURE.md §2): this package imports only `client` and `storage`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click

from client.wire.records import (
    CODEC_NAMES,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    TIMESTAMP_LOG_APPEND_TIME,
    BatchHeader,
    batch_size_at,
    compute_crc,
    read_header,
)
from tools.brokerctl_cluster import cluster_group
from tools.brokerctl_common import (
    BOOTSTRAP_ENV,
    CONNECT_TIMEOUT_MS_DEFAULT,
    DEFAULT_BOOTSTRAP_SERVER,
    OneLineErrorsGroup,
    Settings,
    render_bytes,
    setup_logging,
    to_json_line,
)
from tools.brokerctl_consume import consume_command
from tools.brokerctl_groups import groups_group
from tools.brokerctl_produce import produce_command
from tools.brokerctl_topics import topics_group

# Bound on one batch read into memory. Kafka's DumpLogSegments defaults to 5 MiB; ours is larger
# so that a legitimate big batch is not called corrupt, and can be raised with --max-batch-bytes.
BATCH_BYTES_MAX_DEFAULT = 64 * 1024 * 1024

SEGMENT_SUFFIX = ".log"
SEGMENT_NAME_RE = re.compile(r"^(\d{20})\.log$")

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2


class DumpError(Exception):
    """An operational problem (bad path, unreadable file): reported as one line, exit 2."""


@dataclass
class DumpStats:
    """Counts for the final `summary` entry; `exit_code` follows from them."""

    segments: int = 0
    batches: int = 0
    records: int = 0
    invalid_batches: int = 0
    torn_tails: int = 0
    bad_lengths: int = 0

    @property
    def exit_code(self) -> int:
        return EXIT_CORRUPT if self.invalid_batches or self.bad_lengths else EXIT_OK


# --- reading ----------------------------------------------------------------------------------


def segment_paths(path: str) -> list[str]:
    """The `.log` files to dump for `path` (a partition directory or one segment), in order.

    Raises DumpError for a missing path or a file that is not a `.log` segment. Directory entries
    ending in `.log` whose name is not a 20-digit base offset are skipped with a warning on stderr.
    """
    if not os.path.exists(path):
        raise DumpError(f"no such file or directory: {path}")
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            raise DumpError(f"cannot list {path}: {exc.strerror or exc}") from exc
        found: list[tuple[int, str]] = []
        for name in names:
            full = os.path.join(path, name)
            if not name.endswith(SEGMENT_SUFFIX) or not os.path.isfile(full):
                continue
            match = SEGMENT_NAME_RE.match(name)
            if match is None:
                click.echo(f"brokerctl: warning: skipping {full}: not a 20-digit segment name", err=True)
                continue
            found.append((int(match.group(1)), full))
        return [full for _, full in sorted(found)]
    if not path.endswith(SEGMENT_SUFFIX):
        raise DumpError(f"not a partition directory or a .log segment: {path}")
    return [path]


def segment_base_offset(path: str) -> int | None:
    """The base offset in a segment's file name, or None when the name is not 20 digits + .log."""
    match = SEGMENT_NAME_RE.match(os.path.basename(path))
    return int(match.group(1)) if match else None


def _pread_full(fd: int, position: int, length: int) -> bytes:
    """Read up to `length` bytes at `position`; shorter only at end of file."""
    parts: list[bytes] = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, position + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def iter_segment(path: str, stats: DumpStats, with_records: bool = False,
                 batch_bytes_max: int = BATCH_BYTES_MAX_DEFAULT) -> Iterator[dict[str, Any]]:
    """Yield the entries of one segment file: `segment`, then `batch`es, maybe a final tail entry.

    Raises DumpError when the file cannot be opened or read.
    """
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DumpError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        size_bytes = os.fstat(fd).st_size
        stats.segments += 1
        yield {"type": "segment", "segment": name, "base_offset": segment_base_offset(path),
               "size_bytes": size_bytes}
        position = 0
        while position < size_bytes:
            entry = _read_entry(fd, name, position, size_bytes, with_records, batch_bytes_max)
            _count(stats, entry)
            yield entry
            if entry["type"] != "batch":
                return
            position += entry["size_bytes"]
    except OSError as exc:
        raise DumpError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _count(stats: DumpStats, entry: dict[str, Any]) -> None:
    kind = entry["type"]
    if kind == "batch":
        stats.batches += 1
        stats.records += entry["count"]
        if not entry["crc_valid"] or entry["magic"] != MAGIC_V2:
            stats.invalid_batches += 1
    elif kind == "torn_tail":
        stats.torn_tails += 1
    elif kind == "bad_length":
        stats.bad_lengths += 1


def _read_entry(fd: int, segment: str, position: int, size_bytes: int, with_records: bool,
                batch_bytes_max: int) -> dict[str, Any]:
    """Frame and read the batch at `position`; return a `batch`, `torn_tail` or `bad_length` entry."""
    remaining = size_bytes - position
    head = _pread_full(fd, position, min(LOG_OVERHEAD, remaining))
    if len(head) < LOG_OVERHEAD:  # not even the length field: torn
        return _torn_tail(segment, position, len(head), None)
    batch_size = batch_size_at(head, 0)
    if batch_size < HEADER_SIZE or batch_size > batch_bytes_max:
        return {"type": "bad_length", "segment": segment, "position": position,
                "size_bytes": remaining, "batch_length": batch_size - LOG_OVERHEAD}
    if batch_size > remaining:
        return _torn_tail(segment, position, remaining, batch_size)
    data = _pread_full(fd, position, batch_size)
    if len(data) < batch_size:  # the file shrank under us (a live broker truncating)
        return _torn_tail(segment, position, len(data), batch_size)
    entry = batch_entry(segment, position, data)
    if with_records:
        _add_records(entry, data)
    return entry


def _torn_tail(segment: str, position: int, size_bytes: int, expected_size_bytes: int | None) -> dict[str, Any]:
    return {"type": "torn_tail", "segment": segment, "position": position, "size_bytes": size_bytes,
            "expected_size_bytes": expected_size_bytes}


def batch_entry(segment: str, position: int, data: bytes) -> dict[str, Any]:
    """The `batch` entry for the whole batch `data` found at `position` of `segment`."""
    header: BatchHeader = read_header(data, 0)
    crc_computed = compute_crc(data, 0, len(data))
    codec = header.compression
    return {
        "type": "batch",
        "segment": segment,
        "position": position,
        "base_offset": header.base_offset,
        "last_offset": header.last_offset,
        "leader_epoch": header.leader_epoch,
        "magic": header.magic,
        "count": header.records_count,
        "codec": CODEC_NAMES.get(codec, f"unknown-{codec}"),
        "attributes": header.attributes & 0xFFFF,
        "timestamp_type": ("log_append_time" if header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
                           else "create_time"),
        "transactional": header.is_transactional,
        "control": header.is_control,
        "producer_id": header.producer_id,
        "producer_epoch": header.producer_epoch,
        "base_sequence": header.base_sequence,
        "base_timestamp": header.base_timestamp,
        "max_timestamp": header.max_timestamp,
        "size_bytes": len(data),
        "crc": header.crc,
        "crc_computed": crc_computed,
        "crc_valid": header.crc == crc_computed,
    }


def _add_records(entry: dict[str, Any], data: bytes) -> None:
    """Decode the batch's records into entry["records"], or set entry["records_error"]."""
    from client.wire.records import decode_records  # lazy: lands separately from this tool

    try:
        # The CRC was checked (and reported) by the caller; decoding a CRC-invalid batch anyway is
        # deliberate, best-effort forensics (docs/log-dump-format.md).
        records = decode_records(data, verify_crc=False)
    except Exception as exc:  # arbitrary corrupt bytes reach the decoder: report any failure, go on
        entry["records"] = None
        entry["records_error"] = f"{type(exc).__name__}: {exc}"
        return
    entry["records"] = [record_entry(record) for record in records]


def record_entry(record: Any) -> dict[str, Any]:
    """A decoded `Record` (offset, timestamp, key, value, headers) as its JSON object."""
    return {
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": render_bytes(record.key),
        "value": render_bytes(record.value),
        "headers": [{"key": header_key, "value": render_bytes(header_value)}
                    for header_key, header_value in record.headers],
    }


def iter_dump(paths: list[str], stats: DumpStats, with_records: bool = False,
              batch_bytes_max: int = BATCH_BYTES_MAX_DEFAULT) -> Iterator[dict[str, Any]]:
    """Every entry for `paths` (from `segment_paths`), then the `summary` entry."""
    for path in paths:
        yield from iter_segment(path, stats, with_records, batch_bytes_max)
    yield {"type": "summary", "segments": stats.segments, "batches": stats.batches,
           "records": stats.records, "invalid_batches": stats.invalid_batches,
           "torn_tails": stats.torn_tails, "bad_lengths": stats.bad_lengths}


# --- rendering --------------------------------------------------------------------------------


def _text_bytes(rendered: dict[str, str] | None) -> str:
    if rendered is None:
        return "null"
    if "utf8" in rendered:
        return json.dumps(rendered["utf8"], ensure_ascii=False)  # quoted, one line
    return "b64:" + rendered["base64"]


def to_text_lines(entry: dict[str, Any]) -> list[str]:
    """Human-readable lines for one entry: one per batch, plus one indented line per record."""
    kind = entry["type"]
    if kind == "segment":
        return [f"segment {entry['segment']} base_offset={entry['base_offset']} "
                f"size_bytes={entry['size_bytes']}"]
    if kind == "torn_tail":
        return [f"{entry['segment']} position={entry['position']} TORN TAIL size_bytes={entry['size_bytes']} "
                f"expected_size_bytes={entry['expected_size_bytes']}"]
    if kind == "bad_length":
        return [f"{entry['segment']} position={entry['position']} BAD LENGTH batch_length={entry['batch_length']} "
                f"size_bytes={entry['size_bytes']} (dump of this segment stops)"]
    if kind == "summary":
        return ["summary " + " ".join(f"{key}={value}" for key, value in entry.items() if key != "type")]
    return _batch_text_lines(entry)


def _batch_text_lines(entry: dict[str, Any]) -> list[str]:
    crc_state = "true" if entry["crc_valid"] else f"FALSE(computed=0x{entry['crc_computed']:08x})"
    flags = [f for f, on in (("transactional", entry["transactional"]), ("control", entry["control"])) if on]
    line = (f"{entry['segment']} position={entry['position']} base_offset={entry['base_offset']} "
            f"last_offset={entry['last_offset']} leader_epoch={entry['leader_epoch']} count={entry['count']} "
            f"codec={entry['codec']} attributes=0x{entry['attributes']:04x}"
            f"[{','.join([entry['timestamp_type'], *flags])}] "
            f"producer_id={entry['producer_id']} producer_epoch={entry['producer_epoch']} "
            f"base_sequence={entry['base_sequence']} base_timestamp={entry['base_timestamp']} "
            f"max_timestamp={entry['max_timestamp']} size_bytes={entry['size_bytes']} "
            f"crc=0x{entry['crc']:08x} crc_valid={crc_state}")
    if entry["magic"] != MAGIC_V2:
        line += f" MAGIC={entry['magic']}(expected {MAGIC_V2})"
    lines = [line]
    if "records_error" in entry:
        lines.append(f"  records_error: {entry['records_error']}")
    for record in entry.get("records") or ():
        headers = ",".join(f"{json.dumps(h['key'], ensure_ascii=False)}={_text_bytes(h['value'])}"
                           for h in record["headers"])
        lines.append(f"  offset={record['offset']} timestamp={record['timestamp']} "
                     f"key={_text_bytes(record['key'])} value={_text_bytes(record['value'])} headers=[{headers}]")
    return lines


# --- commands ---------------------------------------------------------------------------------


@click.group(cls=OneLineErrorsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-b", "--bootstrap-server", envvar=BOOTSTRAP_ENV, default=DEFAULT_BOOTSTRAP_SERVER,
              show_default=True, show_envvar=True, metavar="HOST:PORT",
              help="Broker to talk to (used by the online commands; `log dump` is offline).")
@click.option("--connect-timeout-ms", type=click.IntRange(min=1), default=CONNECT_TIMEOUT_MS_DEFAULT,
              show_default=True, metavar="MS", help="Give up on a broker that does not accept a connection in MS.")
@click.option("-v", "--verbose", is_flag=True, help="Log the clients' debug messages, show tracebacks.")
@click.pass_context
def main(ctx: click.Context, bootstrap_server: str, connect_timeout_ms: int, verbose: bool) -> None:
    """Administer a replog cluster and inspect its files."""
    ctx.obj = Settings(bootstrap_server, connect_timeout_ms, verbose)
    setup_logging(ctx, verbose)


main.add_command(topics_group)
main.add_command(produce_command)
main.add_command(consume_command)
main.add_command(cluster_group)
main.add_command(groups_group)


@main.group("log")
def log_group() -> None:
    """Offline tools for partition log directories."""


@log_group.command("dump")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="JSON Lines (docs/log-dump-format.md).")
@click.option("--records", "with_records", is_flag=True, help="Also decode every record.")
@click.option("--max-batch-bytes", type=click.IntRange(min=HEADER_SIZE), default=BATCH_BYTES_MAX_DEFAULT,
              show_default=True, help="Larger length fields are reported as bad_length.")
def dump_command(path: str, as_json: bool, with_records: bool, max_batch_bytes: int) -> None:
    """Dump the record batches of a partition directory or one .log segment, checking CRCs.

    Exit code 0: clean (a torn tail is allowed); 1: a corrupt batch or bad length was found;
    2: usage, path or I/O error.
    """
    stats = DumpStats()
    try:
        if with_records:
            _require_decode_records()
        paths = segment_paths(path)
        for entry in iter_dump(paths, stats, with_records, max_batch_bytes):
            lines = [to_json_line(entry)] if as_json else to_text_lines(entry)
            for line in lines:
                click.echo(line)
    except DumpError as exc:
        _fail(f"log dump: {exc}")
    except BrokenPipeError:
        _quiet_broken_pipe()
    sys.exit(stats.exit_code)


def _require_decode_records() -> None:
    try:
        from client.wire.records import decode_records  # noqa: F401
    except ImportError as exc:
        raise DumpError("--records needs client.wire.records.decode_records, which this build lacks") from exc


def _fail(message: str) -> None:
    click.echo(f"brokerctl: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _quiet_broken_pipe() -> None:
    # The reader went away (`| head`): stop without a traceback, as the Python docs recommend (the
    # dup2 keeps the interpreter's final flush from failing again). An I/O error: exit 2.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main(prog_name="brokerctl")
