"""Scaled train/val/test sets with a scaler, made from the tiny generated data through the data steps."""

from pathlib import Path

import pytest

from container_component_src.data.labels import run_label_series, run_parse_reports
from container_component_src.data.preprocess import PreprocessOptions, run_preprocess
from container_component_src.data.scaling import run_apply_scaler, run_fit_scaler
from container_component_src.data.split import SplitOptions, run_split_dataset
from container_component_src.data.split_archive import list_archives, run_split_archive


@pytest.fixture(scope="session")
def scaled_sets(
    tiny_data: dict[str, str], dask_test_client: object, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    d = tmp_path_factory.mktemp("scaled")
    run_split_archive(list_archives(tiny_data["archives"])[0], str(d / "parts"))
    run_preprocess([str(d / "parts")], str(d / "telemetry"), str(d / "q.json"), dask_test_client, PreprocessOptions())
    run_parse_reports(tiny_data["reports"], str(d / "intervals.parquet"))
    run_label_series(str(d / "telemetry"), str(d / "intervals.parquet"), str(d / "labelled.parquet"))
    names = ("train", "val", "test")
    run_split_dataset(
        str(d / "labelled.parquet"),
        str(d / "intervals.parquet"),
        *(str(d / f"{n}.parquet") for n in names),
        SplitOptions(test_window_hours=2, block_hours=6),
    )
    run_fit_scaler(str(d / "train.parquet"), str(d / "scaler.json"))
    run_apply_scaler(str(d / "scaler.json"), [(str(d / f"{n}.parquet"), str(d / f"s_{n}.parquet")) for n in names])
    return {
        "train": str(d / "s_train.parquet"),
        "val": str(d / "s_val.parquet"),
        "test": str(d / "s_test.parquet"),
        "scaler": str(d / "scaler.json"),
        "root": str(Path(d)),
    }
