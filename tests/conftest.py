"""Shared fixtures: small generated data, an in-process Dask client, a loopback S3 server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from container_component_src.data.generate import GeneratorOptions, run_generate_data

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
def dask_test_client() -> Iterator[object]:
    """A threaded in-process Dask client: the real scheduler without process start-up cost."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


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
