"""Put the figures of the newest finished local run into the README and the docs, and picture its report.

poetry run python pipeline/compile_and_run_pipeline.py --local   # a run on the default data
poetry run python -m pipeline.readme_figures                      # its figures -> README.md, docs/

Rewritten from the run's record (`run.json`: task times), its evaluation summary and its
published model: the README's `run-output` block (the run's task lines and evaluation) and
`serving-example` block (a complete request with the typical row the run saved), and the
`run-figures` block of docs/evaluation.md; the picture is a headless Chromium screenshot of the
run's HTML report.
"""

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from container_component_src.config import load_settings
from container_component_src.evaluation.report import rate
from container_component_src.model.files import TYPICAL_ROWS
from pipeline.compile_and_run_pipeline import RUN_RECORD

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
START, END = "<!-- run-figures:start -->", "<!-- run-figures:end -->"
RUN_OUTPUT, SERVING_EXAMPLE, RUN_FIGURES = "run-output", "serving-example", "run-figures"


def newest_finished_run(pipeline_root: Path) -> Path:
    """The newest run folder with a run record (interrupted and failed runs have none).

    Raises:
        ValueError: No finished run.
    """
    records = sorted(pipeline_root.glob(f"*/{RUN_RECORD}"), key=lambda p: p.stat().st_mtime)
    if not records:
        raise ValueError(f"no finished local run under {pipeline_root}: run the pipeline with --local first")
    return records[-1].parent


def figures_markdown(record: dict[str, Any], summary: dict[str, Any], run_name: str) -> str:
    """The README block: the run's time per task, and its evaluation against the baselines."""
    label_free, best, base = summary["label_free"], summary["best_fc1"], summary["baselines"]
    lines = [
        f"Measured by `python -m pipeline.readme_figures` on the local run `{run_name}` "
        f"(the whole DAG in {record['seconds']:.0f} s):",
        "",
        "| task | seconds | key figure |",
        "|---|---:|---|",
        *(f"| {t['name']} | {t['seconds']:.1f} | {t['figure']} |" for t in record["tasks"]),
        "",
        "| threshold | Fc1 | point F1 | precision | event recall | false-alarm rate |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {m['fc1']:.3f} | {m['f1']:.3f} | {m['precision']:.3f} | {m['event_recall']:.3f} "
            f"| {m['false_alarm_rate']:.2%} |"
            for name, m in (("label-free (deployed)", label_free), ("best Fc1 on the test labels", best))
        ),
        "",
        f"PR-AUC {summary['pr_auc']:.3f}. Baselines on the same labels, Fc1: every row flagged "
        f"{base['all_positive_fc1']:.3f}, random scores {base['random_fc1']:.3f}"
        + (f", the raw signal {base['raw_signal_fc1']:.3f}" if "raw_signal_fc1" in base else "")
        + (f", PCA reconstruction error {base['pca_fc1']:.3f}" if "pca_fc1" in base else "")
        + ".",
        "",
        "Label-free thresholds on the test's normal rows, promised and observed false-alarm rates: "
        + "; ".join(
            f"{method} {m['nominal_false_alarm_rate']:.2%} and {m['false_alarm_rate']:.2%}"
            for method, m in summary["calibration"]["methods"].items()
        )
        + f" ({summary['calibration']['better_calibrated']} keeps its promise best).",
    ]
    return "\n".join(lines)


def run_output(record: dict[str, Any], summary: dict[str, Any]) -> str:
    """The README block: the run's task lines as the console prints them, and its evaluation."""
    label_free, best, ops = summary["label_free"], summary["best_fc1"], summary.get("operations", {})
    lines = [f"✓ {t['name']:<18} {t['seconds']:6.1f} s  {t['figure']}".rstrip() for t in record["tasks"]]
    lines += [
        f"Local run finished in {record['seconds']:.0f} s",
        f"Evaluation: Fc1 {label_free['fc1']:.3f} at the label-free threshold (point F1 {label_free['f1']:.3f}, "
        f"PR-AUC {summary['pr_auc']:.3f}); best Fc1 on the test labels {best['fc1']:.3f}.",
    ]
    if ops:
        lines.append(
            f"Found {ops['events_found']} of {ops['events']} events; {rate(ops['false_alarms_per_day'])} false alarms "
            "per day of normal operation."
        )
    return "```text\n" + "\n".join(lines) + "\n```"


def serving_example(endpoint: dict[str, Any], typical_rows: list[dict[str, float]]) -> str:
    """The README block: a complete V1 request (the typical rows the run saved, to 6 digits) and
    the answer the run's smoke test got for it."""

    def row_text(row: dict[str, float]) -> str:
        items = [f"{json.dumps(name)}: {float(f'{value:.6g}')!r}" for name, value in row.items()]
        lines = [", ".join(items[i : i + 3]) for i in range(0, len(items), 3)]
        return "  {" + ",\n   ".join(lines) + "}"

    body = ",\n".join(row_text(row) for row in typical_rows)
    score = endpoint["smoke"]["v1_scores"][-2]
    return (
        "```bash\n"
        f"curl -s {endpoint['v1_url'].replace('http://', '')} -H 'Content-Type: application/json' -d '\n"
        f'{{"instances": [\n{body}\n]}}\'\n'
        f'# -> {{"predictions": [{{"score": {score:.3f}, "anomaly": false}}]}}\n'
        "```"
    )


def replace_block(text: str, block: str, name: str = RUN_FIGURES) -> str:
    """`text` with the part between `<!-- NAME:start -->` and `<!-- NAME:end -->` replaced by `block`.

    Raises:
        ValueError: The markers are missing.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"no {start} ... {end} block")
    return pattern.sub(lambda _: f"{start}\n{block}\n{end}", text)


def screenshot(page: Path, picture: Path, width: int = 1300, height: int = 1500) -> None:
    """A picture of the top of an HTML page (headless Chromium, no network).

    Raises:
        ValueError: Chromium is not installed.
    """
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise ValueError("the report picture needs Chromium (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={picture}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


@app.command()
def main(
    readme: Annotated[Path, typer.Option(help="README to update.", dir_okay=False)] = Path("README.md"),
    evaluation_page: Annotated[Path, typer.Option(help="Docs page with the run's figures.", dir_okay=False)] = Path(
        "docs/evaluation.md"
    ),
    getting_started: Annotated[Path, typer.Option(help="Docs page with the run's output.", dir_okay=False)] = Path(
        "docs/getting-started.md"
    ),
    picture: Annotated[Path, typer.Option(help="Where the report's picture goes.", dir_okay=False)] = Path(
        "docs/assets/evaluation_report.png"
    ),
) -> None:
    """Write the newest finished local run's figures into the README and the docs; picture its report."""
    try:
        settings = load_settings()
        run = newest_finished_run(Path(settings.data.local_pipeline_root))
        record = json.loads((run / RUN_RECORD).read_text())
        summary = json.loads(Path(record["outputs"]["evaluation_summary"]).read_text())
        endpoint = json.loads((run / "deploy" / "endpoint").read_text())
        typical = json.loads((Path(endpoint["model_dir"]) / TYPICAL_ROWS).read_text())
        text = replace_block(readme.read_text(), run_output(record, summary), RUN_OUTPUT)
        readme.write_text(replace_block(text, serving_example(endpoint, typical), SERVING_EXAMPLE))
        page = replace_block(evaluation_page.read_text(), figures_markdown(record, summary, run.name))
        evaluation_page.write_text(page)
        start = getting_started.read_text()
        getting_started.write_text(replace_block(start, run_output(record, summary), RUN_OUTPUT))
        screenshot(run / "evaluation_report.html", picture)
    except (ValueError, OSError, KeyError, subprocess.CalledProcessError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Updated {readme}, {evaluation_page}, {getting_started} and {picture} from {run}")


if __name__ == "__main__":
    app()
