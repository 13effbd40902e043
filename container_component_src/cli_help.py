"""`--help` that reads well: options filled from config.toml are not marked required, flags show
no `<bool>` type, and the text uses the terminal's width (at least 120 columns when piped)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any


def widen_help(min_width: int = 120) -> None:
    """Render help at the terminal's width, never narrower than `min_width` (rich's 80 cuts
    option names); $TERMINAL_WIDTH, when set, wins."""
    if "TERMINAL_WIDTH" in os.environ:
        return
    width = max(shutil.get_terminal_size((min_width, 24)).columns, min_width)
    rich_utils = sys.modules.get("typer.rich_utils")
    if rich_utils is not None:
        rich_utils.MAX_WIDTH = width
    else:  # typer reads it when it first renders help or an error: a run never pays for rich
        os.environ["TERMINAL_WIDTH"] = str(width)


def finite_float(text: str) -> float:
    """The parser of every float option: a NaN or infinity is refused as it is read, since no
    option means either and a NaN passes every range check (`not 0 < nan < 1` is true).

    Raises:
        typer.BadParameter: Not a finite number.
    """
    import math

    import typer

    number = float(text)
    if not math.isfinite(number):
        raise typer.BadParameter(f"{text!r} is not a finite number")
    return number


# Longer lists of choices would be folded mid-word by rich's type column (`transfor mer`).
CHOICES_WIDTH = 18


def tidy_options(command: Any, configured: Mapping[str, Any]) -> None:
    """Mark the options of `command` whose defaults come from `configured` as not required, give
    flags an empty metavar (their type is their name), and move long lists of choices from the
    type column into the help text."""
    import click

    # Click creates (and keeps) the --help option on demand.
    context = click.Context(command)
    help_option = command.get_help_option(context)
    for param in [*command.params, *([help_option] if help_option else [])]:
        if param.name in configured:
            param.required = False
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.metavar is None and hasattr(param, "display_type_rich"):
            shown = param.display_type_rich(ctx=context) or ""
            if "|" in shown and len(shown) > CHOICES_WIDTH:
                param.metavar = "<choice>"
                param.help = f"{param.help or ''} One of: {', '.join(shown.strip('<>').split('|'))}.".strip()
