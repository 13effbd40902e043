"""Reference pages generated when the docs are built, so they cannot drift from the code.

`mkdocs.yml` names this module as a hook: a page holding `<!-- generated: cli -->` gets the CLI
reference (every subcommand of the image's Typer app and of the pipeline script, with their
options, defaults from `config.toml`, and help), one holding `<!-- generated: configuration -->`
the settings reference (every `config.toml` key with its type, default, environment variable and
the comment above it), one holding `<!-- generated: benchmarks -->` each benchmark's newest
figures as `benchmarks.run_all` wrote them (`benchmarks/figures/`).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
MARKER = re.compile(r"<!-- generated: (\w+) -->")


def _cell(text: Any) -> str:
    """Text as a markdown table cell: one line, pipes and angle brackets escaped."""
    one_line = " ".join(str(text).split()).replace("|", "\\|")
    return one_line.replace("<", "&lt;").replace(">", "&gt;")


def _default(value: Any) -> str:
    """A default as code in a table cell (empty when there is none)."""
    if value is None or value == "":
        return ""
    value = getattr(value, "value", value)
    return "`" + " ".join(str(value).split()).replace("|", "\\|") + "`"


def _options_table(command: Any, defaults: dict[str, Any]) -> list[str]:
    """One row per option: its names, type, default (config.toml's where it has one), help."""
    import click

    context = click.Context(command)
    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for param in command.params:
        if getattr(param, "hidden", False) or not getattr(param, "opts", None):
            continue
        names = ", ".join(f"`{name}`" for name in [*param.opts, *getattr(param, "secondary_opts", [])])
        kind = "flag" if getattr(param, "is_flag", False) else _cell(param.display_type_rich(ctx=context) or "")
        default = defaults.get(param.name, None if param.required else param.default)
        rows.append(f"| {names} | {kind} | {_default(default)} | {_cell(param.help or '')} |")
    return rows


def cli_reference() -> str:
    """Markdown for every subcommand of the image's CLI and for the pipeline script."""
    import inspect

    import typer

    from container_component_src.cli_help import tidy_options
    from container_component_src.config import load_settings
    from container_component_src.main import app, cli_defaults
    from pipeline import compile_and_run_pipeline

    settings = load_settings(CONFIG, environ={}, dotenv=False)
    defaults = cli_defaults(settings)
    root = typer.main.get_command(app)
    lines = [
        "## The image's CLI: `python -m container_component_src.main`",
        "",
        inspect.cleandoc(root.help or ""),
        "",
        *_options_table(root, {}),
    ]
    for name, command in root.commands.items():
        tidy_options(command, defaults.get(name, {}))
        lines += [
            "",
            f"### `{name}`",
            "",
            inspect.cleandoc(command.help or ""),
            "",
            *_options_table(command, defaults.get(name, {})),
        ]
    script = typer.main.get_command(compile_and_run_pipeline.app)
    tidy_options(script, {})
    from pipeline.pipeline_definition import build_pipeline

    lines += [
        "",
        "## The pipeline script: `pipeline/compile_and_run_pipeline.py`",
        "",
        inspect.cleandoc(script.help or ""),
        "",
        *_options_table(script, {}),
        "",
        "### Pipeline parameters (`--param key=value`, or the Kubeflow UI)",
        "",
        "```text",
        compile_and_run_pipeline.parameters_help(build_pipeline(settings)),
        "```",
    ]
    return "\n".join(lines)


def _config_comments(text: str) -> dict[tuple[str, str], str]:
    """The comment lines right above each `key = value` of `config.toml`, by (section, key)."""
    comments: dict[tuple[str, str], str] = {}
    section, pending = "", []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section, pending = stripped.strip("[]"), []
        elif stripped.startswith("#"):
            pending.append(stripped.lstrip("# "))
        elif "=" in stripped and section:
            comments[(section, stripped.split("=", 1)[0].strip())] = " ".join(pending)
            pending = []
        elif not stripped:
            pending = []
    return comments


def configuration_reference() -> str:
    """Markdown for every setting: the Settings schema's types, config.toml's defaults and comments."""
    import dataclasses

    from container_component_src.config import ENV_PREFIX, Settings, load_settings

    settings = load_settings(CONFIG, environ={}, dotenv=False)
    comments = _config_comments(CONFIG.read_text())
    lines = []
    for section in dataclasses.fields(Settings):
        values = getattr(settings, section.name)
        hints = typing.get_type_hints(type(values))
        lines += [
            f"## `[{section.name}]`",
            "",
            "| key | type | default | environment variable | what it sets |",
            "|---|---|---|---|---|",
        ]
        for field in dataclasses.fields(values):
            hint = hints[field.name]
            kind = getattr(hint, "__name__", str(hint)).replace("typing.", "")
            env = f"`{ENV_PREFIX}{section.name.upper()}__{field.name.upper()}`"
            value = getattr(values, field.name)
            lines.append(
                f"| `{field.name}` | {_cell(kind)} | {_default(value)} | {env} | "
                f"{_cell(comments.get((section.name, field.name), ''))} |"
            )
        lines.append("")
    return "\n".join(lines)


def benchmark_figures() -> str:
    """Markdown of each benchmark's newest figures, as `benchmarks.run_all` wrote them."""
    from benchmarks.run_all import FIGURES, NAMES

    lines = []
    for name in NAMES:
        path = FIGURES / f"{name}.md"
        lines += [f"### {name}", ""]
        if path.is_file():
            lines.append(path.read_text())
        else:
            lines += [f"Not measured on this checkout yet: `python -m benchmarks.run_all --only {name}`.", ""]
    return "\n".join(lines)


GENERATORS = {"cli": cli_reference, "configuration": configuration_reference, "benchmarks": benchmark_figures}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook: replace each `<!-- generated: NAME -->` marker with its generated reference."""
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)
