"""Checks of the CLI's options that name Pulse's ids: a bad one is refused by click, in words,
before anything is written (the same rule as ingest's, :mod:`pulse.identifiers`)."""

from __future__ import annotations

from typing import TypeVar

import click

from pulse.identifiers import ID_WORDS, is_identifier

__all__ = ["identifiers"]

_Value = TypeVar("_Value", str, tuple[str, ...], None)


def identifiers(_ctx: click.Context, _param: click.Parameter, value: _Value) -> _Value:
    """A click callback for an id option (single, optional or repeatable): ``value`` as given,
    or :class:`click.BadParameter` naming the id that is not one."""
    given: tuple[str, ...] = (value,) if isinstance(value, str) else value or ()
    for one in given:
        if not is_identifier(one):
            raise click.BadParameter(f"{one!r} {ID_WORDS}")
    return value
