"""Render the pipeline's DAG from its compiled IR (the YAML KFP runs) as a Graphviz picture.

poetry run python -m pipeline.render_dag docs/assets/pipeline_dag.png    # needs Graphviz's `dot`
"""

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _tasks(spec: dict[str, Any], dag: dict[str, Any], prefix: str, lines: list[str]) -> tuple[str, str]:
    """Add the nodes and edges of `dag` (nested sub-DAGs as clusters); return its entry and exit node."""
    tasks = dag.get("tasks", {})
    ends: dict[str, tuple[str, str]] = {}
    for name, task in tasks.items():
        node = f"{prefix}{name}"
        component = spec["components"][task["componentRef"]["name"]]
        label = name + (" (ParallelFor)" if "parameterIterator" in task or "artifactIterator" in task else "")
        if "triggerPolicy" in task:  # A dsl.If: name the branch after what it checks.
            label = f"if {task['taskInfo']['name']}"
        if "dag" in component:
            lines.append(f'  subgraph "cluster_{node}" {{ label="{label}"; style="rounded,dashed"; color="#7a869a";')
            ends[name] = _tasks(spec, component["dag"], f"{node}/", lines)
            lines.append("  }")
        else:
            lines.append(f'  "{node}" [label="{label}"];')
            ends[name] = (node, node)
    upstream = {name: task.get("dependentTasks", []) for name, task in tasks.items()}
    for name, dependencies in upstream.items():
        for dependency in dependencies:
            lines.append(f'  "{ends[dependency][1]}" -> "{ends[name][0]}";')
    # Edges into a sub-DAG point at its first source, edges out of it leave from its first sink.
    source = next(n for n in tasks if not upstream[n])
    sink = next(n for n in tasks if not any(n in deps for deps in upstream.values()))
    return ends[source][0], ends[sink][1]


def to_dot(spec: dict[str, Any]) -> str:
    """Graphviz DOT text of a compiled pipeline spec."""
    lines = [
        f'digraph "{spec["pipelineInfo"]["name"]}" {{',
        "  rankdir=TB; compound=true;",
        '  node [shape=box, style="rounded,filled", fillcolor="#e8f0fe", color="#4a6fa5", fontname="Helvetica"];',
        '  edge [color="#4a6fa5"]; graph [fontname="Helvetica"];',
    ]
    _tasks(spec, spec["root"]["dag"], "", lines)
    lines.append("}")
    return "\n".join(lines)


@app.command()
def main(
    out: Annotated[Path, typer.Argument(help="Picture to write (.png or .svg).", dir_okay=False)],
    config: Annotated[Path | None, typer.Option(help="Config file.", dir_okay=False)] = None,
) -> None:
    """Compile the pipeline and draw its DAG."""
    from kfp import compiler

    from container_component_src.config import load_settings
    from pipeline.pipeline_definition import build_pipeline

    dot = shutil.which("dot")
    if dot is None:
        typer.echo("Error: Graphviz's `dot` is not installed (e.g. apt-get install graphviz)", err=True)
        raise typer.Exit(1)
    with tempfile.TemporaryDirectory() as tmp:
        compiled = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(build_pipeline(load_settings(config)), str(compiled))
        spec = next(yaml.safe_load_all(compiled.read_text()))  # the pipeline; the platform spec follows
    fmt = out.suffix.lstrip(".") or "png"
    subprocess.run([dot, f"-T{fmt}", "-Gdpi=130", "-o", str(out)], input=to_dot(spec), text=True, check=True)
    typer.echo(f"Wrote {out}")


if __name__ == "__main__":
    app()
