"""Put the figures of the newest finished local run into the README, and picture its report.

poetry run python pipeline/compile_and_run_pipeline.py --local   # a run on the default data
poetry run python -m pipeline.readme_figures                      # its figures -> README.md, report -> assets/

The README's block between `<!-- run-figures:start -->` and `<!-- run-figures:end -->` is
rewritten from the run's record (`run.json`: task times) and its evaluation summary; the picture
is a headless Chromium screenshot of the run's HTML report.
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
from pipeline.compile_and_run_pipeline import RUN_RECORD

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
START, END = "<!-- run-figures:start -->", "<!-- run-figures:end -->"


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


def replace_block(text: str, block: str) -> str:
    """`text` with the part between the markers replaced by `block`.

    Raises:
        ValueError: The markers are missing.
    """
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"the README has no {START} ... {END} block")
    return pattern.sub(lambda _: f"{START}\n{block}\n{END}", text)


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
    picture: Annotated[Path, typer.Option(help="Where the report's picture goes.", dir_okay=False)] = Path(
        "docs/assets/evaluation_report.png"
    ),
) -> None:
    """Write the newest finished local run's figures into the README and picture its report."""
    try:
        settings = load_settings()
        run = newest_finished_run(Path(settings.data.local_pipeline_root))
        record = json.loads((run / RUN_RECORD).read_text())
        summary = json.loads(Path(record["outputs"]["evaluation_summary"]).read_text())
        readme.write_text(replace_block(readme.read_text(), figures_markdown(record, summary, run.name)))
        screenshot(run / "evaluation_report.html", picture)
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Updated {readme} and {picture} from {run}")


if __name__ == "__main__":
    app()
