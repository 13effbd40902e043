"""The one bridge from keyword options to a command line of the image's CLI.

Every KFP component and every pod the package starts (Katib trials, PyTorchJob replicas, KServe
containers, the local model server) builds its `python -m container_component_src.main` command
here, from option names spelled as the subcommand's parameters; a test checks each against the
subcommand's real options.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from container_component_src.errors import OptionError

MODULE_COMMAND = ("python", "-m", "container_component_src.main")


def flag(name: str) -> str:
    """`max_epochs` -> `--max-epochs`."""
    return "--" + name.replace("_", "-")


def to_argv(subcommand: str, options: Mapping[str, Any], settings: str | None = None) -> list[str]:
    """`[--settings JSON] subcommand --option value ...` for `options`.

    None leaves an option out (its default applies); a bool becomes `--name` or `--no-name`; a
    list or tuple repeats the option once per item; anything else is passed as `str(value)`.

    Args:
        subcommand: The subcommand, e.g. "preprocess".
        options: Option values keyed by parameter name.
        settings: The settings JSON the pipeline was compiled with (see `config.settings_to_json`);
            the subcommand then uses it in place of the image's config.toml.
    """
    argv = ["--settings", settings] if settings is not None else []
    argv.append(subcommand)
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag(name) if value else flag(f"no_{name}"))
        elif isinstance(value, list | tuple):
            for item in value:
                argv += [flag(name), _text(item)]
        else:
            argv += [flag(name), _text(value)]
    return argv


def _text(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def weight_pairs(weights: Mapping[str, float]) -> list[str]:
    """`{"Temperature": 0.0}` as `["Temperature=0.0"]`: a map of weights as a repeatable option."""
    return [f"{name}={weight!r}" for name, weight in weights.items()]


def parse_weight_pairs(pairs: list[str], option: str) -> dict[str, float]:
    """`weight_pairs`' output read back; a name may hold "=" (the weight follows the last one).

    Raises:
        OptionError: A pair is not NAME=WEIGHT, or names one thing twice.
    """
    weights: dict[str, float] = {}
    for pair in pairs:
        name, _, text = pair.rpartition("=")
        try:
            weight = float(text)
        except ValueError:
            weight = math.nan
        if not name or math.isnan(weight):
            raise OptionError(f"{option} expects NAME=WEIGHT, got {pair!r}")
        if name in weights:
            raise OptionError(f"{option} names {name!r} twice")
        weights[name] = weight
    return weights
