"""`brokerd`: start one broker. With no arguments: a working single-node broker, data in
./replog-data, clients on 127.0.0.1:9092.

It logs `listening on HOST:PORT` once ready, shuts down cleanly on SIGTERM/SIGINT (flushes every
log, writes the clean-shutdown marker) and exits non-zero with one clear line on bad
configuration, a busy port, or a data directory locked by another process or owned by another
node id. Config keys are Kafka's (docs/configuration.md); `--set key=value` sets any of them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click

from broker.config import ConfigError, load_config
from broker.identity import IdentityError

log = logging.getLogger("brokerd")


async def _serve(config: object) -> None:
    from broker import bugs
    from broker.broker import Broker

    if bugs.ACTIVE:
        log.warning("DELIBERATELY BROKEN VARIANT (REPLOG_BUG=%s): for checker canaries only",
                    ",".join(sorted(bugs.ACTIVE)))
    broker = Broker(config)  # type: ignore[arg-type]
    await broker.start()
    host, port = broker.host, broker.port
    log.info("listening on %s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await broker.stop()
        log.info("stopped cleanly")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with Kafka config keys.")
@click.option("--node-id", type=int, help="This node's id (node.id). Default 1.")
@click.option("--data-dir", help="Data directory (log.dirs). Default ./replog-data.")
@click.option("--listen", help="Client listener HOST:PORT (listeners). Default 127.0.0.1:9092.")
@click.option("--advertised", help="HOST:PORT given to clients (advertised.listeners). Default: --listen.")
@click.option("--roles", help="process.roles: broker, controller or broker,controller (default both).")
@click.option("--controller-listen", help="Controller (Raft) listener HOST:PORT (controller.listeners). "
              "Default 127.0.0.1:9093.")
@click.option("--voters", help="Controller quorum ID@HOST:PORT,... (controller.quorum.voters). "
              "Default: NODE_ID@CONTROLLER_LISTEN, a one-voter quorum.")
@click.option("--quorum/--no-quorum", "quorum", default=None,
              help="Metadata from the Raft quorum (default), or the single-node topics.json store "
              "(metadata.quorum.enable).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Any broker config, Kafka name.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(config_file: str | None, node_id: int | None, data_dir: str | None, listen: str | None,
         advertised: str | None, roles: str | None, controller_listen: str | None, voters: str | None,
         quorum: bool | None, settings: tuple[str, ...], log_level: str) -> None:
    """Start a replog broker (single node by default)."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, object] = {}
    for flag, key in ((node_id, "node.id"), (data_dir, "log.dirs"), (listen, "listeners"),
                      (advertised, "advertised.listeners"), (roles, "process.roles"),
                      (controller_listen, "controller.listeners"), (voters, "controller.quorum.voters"),
                      (quorum, "metadata.quorum.enable")):
        if flag is not None:
            overrides[key] = flag
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = value.strip()
    try:
        config = load_config(config_file, overrides)
        asyncio.run(_serve(config))
    except (ConfigError, IdentityError) as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot start: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


def _fail(message: str) -> None:
    click.echo(f"brokerd: error: {message}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
