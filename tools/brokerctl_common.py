"""What brokerctl's online commands (`topics`, `produce`, `consume`, `cluster`) share: the global
settings, the client configuration, the error boundary, the byte rendering and JSON lines.

The error boundary (`run`) is the contract of every online command: whatever goes wrong is reported
as ONE line on stderr (`brokerctl: ...`) and an exit code, never a traceback:

* 0: done; 1: the operation failed (a broker refused it, the cluster is unreachable, a record was
  not delivered, an unknown topic, an internal error); 2: bad usage (click's code for bad
  arguments; also an unparsable HOST:PORT); 130: interrupted (Ctrl-C).
* The clients' log records of level ERROR are printed as one `brokerctl: error: ...` line each
  (their warnings, e.g. "metadata refresh failed", would repeat what the error line says);
  `--verbose` shows every record down to DEBUG, with tracebacks, and lets an unexpected exception
  (a bug) propagate with its traceback instead of the one-line report.

Bytes are rendered as in `log dump` (docs/log-dump-format.md): null, `{"utf8": text}` when the
bytes are valid UTF-8, else `{"base64": standard padded base64}`.

Dependency direction (ARCHITECTURE.md §2): this package imports only `client` and `storage`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

import click

from client.cluster import Cluster, parse_bootstrap
from client.errors import KafkaConnectionError, KafkaError, UnknownTopicOrPartitionError, broker_error
from client.wire.errors import ErrorCode

DEFAULT_BOOTSTRAP_SERVER = "127.0.0.1:9092"
BOOTSTRAP_ENV = "REPLOG_BOOTSTRAP"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention

# An operator waits for a CLI: fail fast on an unreachable broker rather than use the clients'
# defaults (10 s connect, 30 s request, 60 s of admin retries).
CONNECT_TIMEOUT_MS_DEFAULT = 5_000
REQUEST_TIMEOUT_MS = 15_000
API_TIMEOUT_MS = 20_000  # retries of admin calls and offset lookups

T = TypeVar("T")


class CommandError(Exception):
    """An operational failure a command reports itself: one line, `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Settings:
    """The global options (`brokerctl [-b HOST:PORT] [--connect-timeout-ms MS] [-v] ...`)."""

    bootstrap_server: str
    connect_timeout_ms: int = CONNECT_TIMEOUT_MS_DEFAULT
    verbose: bool = False

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments every client (Admin, Producer, Consumer) takes."""
        return {"connect_timeout_ms": self.connect_timeout_ms, "request_timeout_ms": REQUEST_TIMEOUT_MS,
                "client_id": "brokerctl"}


def settings(ctx: click.Context) -> Settings:
    """The global settings, with the bootstrap address checked (a bad one is a usage error)."""
    found: Settings = ctx.find_root().obj
    try:
        parse_bootstrap(found.bootstrap_server)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx.find_root(), param_hint="'-b' / '--bootstrap-server'") from None
    return found


# --- the error boundary -------------------------------------------------------------------------


def fail(message: str, exit_code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"brokerctl: {message}", err=True)
    sys.exit(exit_code)


class _NeverRaised(click.UsageError):
    """Stands in for NoArgsIsHelpError on click < 8.2, which prints the help itself."""


# click >= 8.2 raises this UsageError for a group called without a command: show the help as click does
_NO_ARGS_IS_HELP: type[click.UsageError] = getattr(click.exceptions, "NoArgsIsHelpError", _NeverRaised)


class OneLineErrorsGroup(click.Group):
    """A click group whose usage errors are one stderr line (click prints usage, a hint and the
    error on four); exit code 2 as click's."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # a bare `brokerctl` / `brokerctl topics`: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "brokerctl")
            fail(f"{' '.join(exc.format_message().split())} (see '{where} --help')", EXIT_USAGE)
        except click.ClickException as exc:
            fail(" ".join(exc.format_message().split()), exc.exit_code)
        except click.Abort:
            fail("interrupted", EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)


def describe_error(exc: KafkaError) -> str:
    """One line for a Kafka error: the client's message and the error code's name."""
    text = " ".join(str(exc).split()) or exc.code.name
    return text if exc.code.name in text else f"{text} [{exc.code.name}]"


def run(ctx: click.Context, main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on a fresh event loop; report any failure as one stderr line and exit (module docstring)."""
    try:
        found = settings(ctx)
    except click.ClickException:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    try:
        return asyncio.run(main)
    except CommandError as exc:
        fail(str(exc), exc.exit_code)
    except KafkaConnectionError as exc:
        fail(f"cannot reach {found.bootstrap_server}: {describe_error(exc)}")
    except KafkaError as exc:
        fail(describe_error(exc))
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        quiet_broken_pipe(EXIT_FAILED)
    except click.ClickException:
        raise
    except Exception as exc:  # a bug: reported in one line (the traceback with --verbose), never silent
        if found.verbose:
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)")


def quiet_broken_pipe(exit_code: int) -> NoReturn:
    """The reader went away (`| head`): stop without a traceback, as the Python docs recommend (the
    dup2 keeps the interpreter's final flush from failing again)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):  # stdout without a file descriptor (tests): nothing to do
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(exit_code)


# --- logging ------------------------------------------------------------------------------------


class _OneLineFormatter(logging.Formatter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = f"brokerctl: {record.levelname.lower()}: {record.name}: {record.getMessage()}"
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and self.verbose:
            return text + "\n" + self.formatException(record.exc_info)  # type: ignore[arg-type]
        if exc is not None:
            text += f": {type(exc).__name__}: {exc}"
        return " ".join(text.split())


class _StderrHandler(logging.Handler):
    """Writes to the current sys.stderr (click's test runner swaps it), through click."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # logging must never raise into the client
            self.handleError(record)


LOGGERS = ("client", "asyncio")


def setup_logging(ctx: click.Context, verbose: bool) -> None:
    """Route the clients' log records to stderr, one line each, until `ctx` closes (the loggers are
    restored then, so that in-process callers such as tests are left as they were)."""
    handler = _StderrHandler(logging.DEBUG if verbose else logging.ERROR)
    handler.setFormatter(_OneLineFormatter(verbose))
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.addHandler(handler)
        if verbose:
            logger.setLevel(logging.DEBUG)

    def restore() -> None:
        for name, level in saved.items():
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(level)

    ctx.call_on_close(restore)


# --- shared helpers -----------------------------------------------------------------------------


class _Client(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Client)


@contextlib.asynccontextmanager
async def started(client: C, found: Settings) -> AsyncIterator[C]:
    """`client` started and closed. Starting only fetches metadata from a bootstrap broker, so any
    failure there (refused, timed out, no answer) is reported as the cluster being unreachable.
    (A client closes what it opened when its start fails.)"""
    try:
        await client.start()
    except KafkaError as exc:
        raise CommandError(f"cannot reach {found.bootstrap_server}: {describe_error(exc)}") from exc
    try:
        yield client
    finally:
        await client.close()


async def topic_partitions(cluster: Cluster, topic: str) -> list[int]:
    """The partition ids of an existing `topic`, from one Metadata request that never auto-creates it.

    Raises UnknownTopicOrPartitionError for a topic that does not exist (the producer's own metadata
    requests would auto-create it on a broker with auto.create.topics.enable).
    """
    response = await cluster.fetch_metadata([topic], allow_auto_topic_creation=False)
    found = next((t for t in response["topics"] if t["name"] == topic), None)
    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if found is None else found["error_code"]
    if code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
        raise UnknownTopicOrPartitionError(f"unknown topic {topic!r}", code=code)
    if code:
        raise broker_error(code, context=f"topic {topic!r}")
    assert found is not None
    return sorted(p["partition_index"] for p in found["partitions"])


def render_bytes(data: bytes | None) -> dict[str, str] | None:
    """null for None; {"utf8": text} when `data` is valid UTF-8; else {"base64": standard, padded}."""
    if data is None:
        return None
    try:
        return {"utf8": bytes(data).decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def to_json_line(entry: Any) -> str:
    """One JSON Lines line: insertion key order, compact separators, ASCII only (any locale)."""
    return json.dumps(entry, ensure_ascii=True, separators=(",", ":"))


def echo_json(entry: Any) -> None:
    """One JSON document (an object or a list) on stdout, pretty enough to read, stable to parse."""
    click.echo(json.dumps(entry, ensure_ascii=True, indent=2))


def parse_config_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """click callback: ("k=v", ...) -> {k: v}; an item without '=', an empty key or a repeated key is
    a usage error."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        if key in out:
            raise click.BadParameter(f"{key!r} is given twice", ctx=ctx, param=param)
        out[key] = value
    return out
