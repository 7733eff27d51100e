"""The ``pulse`` command: operator tools for a running Pulse.

Built in, and so inside every service image: ``token``, ``tail``, ``keys``, ``fraud``,
``webhooks``, ``review`` and ``dlq`` (one module each in this package). Other installed
packages add commands through the ``pulse.commands`` entry-point group: the development
package ``pulse-dev`` (installed by ``make run`` / ``make test``, never in an image) adds
``dev`` and ``load``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Final

import click

from pulse.cli import target
from pulse.cli.api_keys import keys
from pulse.cli.blocklists import fraud
from pulse.cli.dead_letters import dlq
from pulse.cli.review import review
from pulse.cli.tailing import tail
from pulse.cli.tokens import token
from pulse.cli.webhook_endpoints import webhooks

__all__ = ["main"]

ENTRY_POINT_GROUP: Final = "pulse.commands"
# Commands the development package provides: named in the error when it is not installed.
_DEV_COMMANDS: Final = frozenset({"dev", "load"})


class _PulseGroup(click.Group):
    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in _DEV_COMMANDS and self.get_command(ctx, args[0]) is None:
            raise click.UsageError(
                f"`pulse {args[0]}` comes with the development package pulse-dev (a checkout's "
                "`make run` installs it); service images carry only the operator commands.",
                ctx,
            )
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; what the operator fixes in the environment (credentials, region,
        an endpoint or Redis that does not answer) is one line saying what to set."""
        try:
            return super().invoke(ctx)
        except Exception as exc:
            line = target.explain(exc)
            if line is None:
                raise
            raise click.ClickException(line) from None


@click.group(
    cls=_PulseGroup,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.version_option(package_name="pulse", prog_name="pulse", message="%(prog)s %(version)s")
def main() -> None:
    """Pulse: a self-reporting, real-time event pipeline."""


for _command in (token, tail, keys, fraud, webhooks, review, dlq):
    main.add_command(_command)
for _entry in entry_points(group=ENTRY_POINT_GROUP):
    main.add_command(_entry.load(), _entry.name)


if __name__ == "__main__":
    main()
