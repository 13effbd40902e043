"""Training budgets on small training sets: how `min_steps` (the floor of optimizer steps before
early stopping may act), `patience` and the epoch bound play out as the training rows shrink.

The default generated data through the data steps, then the model trained on the newest N rows
of its training set (N from a few thousand to all of it) under each budget, validated and
evaluated on the full validation and test sets: epochs and steps run, whether early stopping
ended the run, seconds, the validation objective and Fc1 at the label-free threshold.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import default_data_settings

TRAIN_ROWS = (2_000, 8_000, None)  # None: the whole training set
BUDGETS = {
    "default budget (min_steps 500, patience 4 epochs, at most 30 epochs)": {},
    "until early stopping (no step floor, patience 4 epochs, at most 400 epochs)": {"min_steps": 0, "max_epochs": 400},
}
# What tuning found for the default data in the local run (its best trial): a model that
# converges, so that the budgets, not the hyperparameters, make the difference.
PARAMS = {"learning_rate": 0.0082, "batch_size": 256, "beta": 0.82, "hidden_size": 64, "latent_dim": 6}


def scaled_set_urls(folder: Path) -> dict[str, str]:
    """Where `scaled_sets` puts the scaled sets and the scaler."""
    return {n: str(folder / f"s_{n}") for n in ("train", "val", "test")} | {"scaler": str(folder / "scaler.json")}


def scaled_sets(folder: Path) -> dict[str, str]:
    """The default data through split-archive ... apply-scaler, in `folder`."""
    from concurrent.futures import ThreadPoolExecutor

    from container_component_src.cluster.dask import Tasks
    from container_component_src.data.labels import run_label_series, run_parse_reports
    from container_component_src.data.preprocess import PreprocessOptions, run_preprocess
    from container_component_src.data.scaling import run_apply_scaler, run_fit_scaler
    from container_component_src.data.split import SplitOptions, run_split_dataset
    from container_component_src.data.split_archive import list_archives, run_split_archive

    settings = default_data_settings(str(folder))
    parts = [str(folder / "parts" / Path(a).stem) for a in list_archives(settings.data.archives_url)]
    for archive, out in zip(list_archives(settings.data.archives_url), parts, strict=True):
        run_split_archive(archive, out)
    names = ("train", "val", "test")
    with ThreadPoolExecutor(2) as pool:
        tasks = Tasks(pool, 2)
        run_preprocess(parts, str(folder / "grid"), str(folder / "q.json"), tasks, PreprocessOptions())
        run_parse_reports(settings.data.reports_url, str(folder / "intervals.parquet"))
        run_label_series(str(folder / "grid"), str(folder / "intervals.parquet"), str(folder / "labelled"), tasks)
        run_split_dataset(
            str(folder / "labelled"),
            str(folder / "intervals.parquet"),
            *(str(folder / n) for n in names),
            SplitOptions(),
            tasks,
        )
        run_fit_scaler(str(folder / "train"), str(folder / "scaler.json"))
        run_apply_scaler(str(folder / "scaler.json"), [(str(folder / n), str(folder / f"s_{n}")) for n in names], tasks)
    return scaled_set_urls(folder)


def _newest_rows(url: str, rows: int, out: str) -> str:
    """The newest `rows` rows of a dataset, as a one-part dataset."""
    from container_component_src import datasets, storage

    frame = storage.read_parquet(url)
    writer = datasets.PartWriter(storage.join(out, "part-00000.parquet"))
    writer.write(frame.iloc[len(frame) - rows :])
    datasets.write_manifest(out, [writer.close()])
    return out


def run() -> list[dict[str, Any]]:
    from container_component_src.evaluation.evaluate import EvaluateOptions, run_evaluate
    from container_component_src.model.train import ModelParams, TrainOptions, run_train

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        sets = scaled_sets(folder)
        for size in TRAIN_ROWS:
            train = sets["train"] if size is None else _newest_rows(sets["train"], size, str(folder / f"train_{size}"))
            for budget, changes in BUDGETS.items():
                model = str(folder / f"model_{size}_{len(rows)}")
                options = dataclasses.replace(TrainOptions(accelerator="cpu", progress=False), **changes)
                metrics = run_train(train, sets["val"], sets["scaler"], model, ModelParams(**PARAMS), options)
                out = [str(folder / f"{name}_{len(rows)}") for name in ("results", "summary.json", "report.html")]
                summary = run_evaluate(model, sets["val"], sets["test"], *out, EvaluateOptions(worst_events=1))
                per_epoch = -(-metrics["train_rows"] // metrics["batch_size"])  # the point model: a row an input
                bound = max(options.max_epochs, -(-options.min_steps // per_epoch))
                rows.append(
                    {
                        "benchmark": "training budget on small sets (generated data)",
                        "case": f"{metrics['train_rows']:,} training rows, {budget}",
                        "seconds": metrics["seconds"],
                        "fc1": round(summary["metrics"]["fc1"], 3),
                        "baseline": (
                            f"val_nll {metrics['val_nll']:.2f}; {metrics['epochs']} epochs "
                            f"({'stopped early' if metrics['epochs'] < bound else 'ran to the bound'} of {bound}), "
                            f"{metrics['steps']} steps of batch {metrics['batch_size']}, best epoch "
                            f"{metrics['best_epoch'] + 1}"
                        ),
                    }
                )
    return rows
