"""`brokerd`: the broker process's entry point (composition root, ARCHITECTURE.md §2).

For now a stub: the broker server lands with issue 3. `brokerd` and `brokerd --help` print the
help text and exit 0; the console script `brokerd = broker.main:main` is declared in pyproject.toml.
"""

from __future__ import annotations

import click

NOT_YET_MESSAGE = "brokerd: the broker server is not implemented yet; it lands with issue 3."


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               epilog="The broker server lands with issue 3.")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run a replog node (broker and/or controller roles). Not implemented yet: see issue 3."""
    click.echo(NOT_YET_MESSAGE)
    click.echo(ctx.get_help())


if __name__ == "__main__":
    main(prog_name="brokerd")
