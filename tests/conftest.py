"""Shared fixtures: small generated data, the data steps run on it, a model trained on it, an
in-process Dask client, a loopback S3 server."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from container_component_src.data.generate import GeneratorOptions, run_generate_data
from container_component_src.data.labels import run_label_series, run_parse_reports
from container_component_src.data.preprocess import PreprocessOptions, run_preprocess
from container_component_src.data.scaling import run_apply_scaler, run_fit_scaler
from container_component_src.data.split import SplitOptions, run_split_dataset
from container_component_src.data.split_archive import list_archives, run_split_archive

# MinIO addresses buckets by path whatever the Host header says (pods reach it by a Service name);
# moto reads a name in the Host as a bucket unless told, and reads this when it is imported.
os.environ.setdefault("S3_IGNORE_SUBDOMAIN_BUCKETNAME", "true")

TINY = GeneratorOptions(
    years=(2021,),
    days_per_year=4,
    sampling_period_s=30.0,
    n_channels=6,
    seed=3,
    anomalies_per_day=1.0,
    row_group_rows=2_000,
)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Four days of one year, six channels: archives, reports and ground truth."""
    root = tmp_path_factory.mktemp("tiny")
    urls = {
        "archives": str(root / "archives"),
        "reports": str(root / "reports.xlsx"),
        "truth": str(root / "truth.parquet"),
    }
    run_generate_data(urls["archives"], urls["reports"], urls["truth"], TINY)
    return urls


@pytest.fixture(scope="session")
def scaled_sets(
    tiny_data: dict[str, str],
    thread_tasks: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Scaled train/val/test sets with a scaler, made from the tiny data through the data steps."""
    d = tmp_path_factory.mktemp("scaled")
    run_split_archive(list_archives(tiny_data["archives"])[0], str(d / "parts"))
    run_preprocess([str(d / "parts")], str(d / "telemetry"), str(d / "q.json"), thread_tasks, PreprocessOptions())
    run_parse_reports(tiny_data["reports"], str(d / "intervals.parquet"))
    run_label_series(str(d / "telemetry"), str(d / "intervals.parquet"), str(d / "labelled.parquet"), thread_tasks)
    names = ("train", "val", "test")
    run_split_dataset(
        str(d / "labelled.parquet"),
        str(d / "intervals.parquet"),
        *(str(d / f"{n}.parquet") for n in names),
        SplitOptions(test_window_hours=2, block_hours=6),
        thread_tasks,
    )
    run_fit_scaler(str(d / "train.parquet"), str(d / "scaler.json"))
    pairs = [(str(d / f"{n}.parquet"), str(d / f"s_{n}.parquet")) for n in names]
    run_apply_scaler(str(d / "scaler.json"), pairs, thread_tasks)
    return {
        "train": str(d / "s_train.parquet"),
        "val": str(d / "s_val.parquet"),
        "test": str(d / "s_test.parquet"),
        "scaler": str(d / "scaler.json"),
        "root": str(Path(d)),
    }


@pytest.fixture(scope="session")
def trained_model(scaled_sets: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small VAE trained on the scaled tiny data: its Model artifact folder and metrics."""
    from container_component_src.model.train import ModelParams, TrainOptions, run_train

    out = tmp_path_factory.mktemp("model") / "model"
    options = TrainOptions(max_epochs=6, min_steps=1000, patience=2, accelerator="cpu", progress=False)
    params = ModelParams(batch_size=256, hidden_size=32, latent_dim=3)
    metrics = run_train(scaled_sets["train"], scaled_sets["val"], scaled_sets["scaler"], str(out), params, options)
    return {"model": str(out), "metrics": metrics}


@pytest.fixture(scope="session")
def dask_test_client() -> Iterator[object]:
    """A threaded in-process Dask client: the real scheduler without process start-up cost."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def thread_tasks() -> Iterator[object]:
    """Two threads of this process: where a local step's tasks run (`step_tasks` on "local")."""
    from container_component_src.cluster.dask import ClusterOptions, step_tasks

    with step_tasks(ClusterOptions(n_workers=2)) as tasks:
        yield tasks


@pytest.fixture(scope="session")
def dask_tasks(dask_test_client: object) -> object:
    """The same tasks on a Dask cluster's workers (`step_tasks` on "kubernetes")."""
    from container_component_src.cluster.dask import Tasks

    return Tasks.of_client(dask_test_client)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty bucket on a moto S3 server on loopback; AWS_* variables point at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3
    from s3fs import S3FileSystem

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="telemetry")
    S3FileSystem.clear_instance_cache()
    try:
        yield "s3://telemetry"
    finally:
        S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
