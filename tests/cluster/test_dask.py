import json

import pytest

from container_component_src.cluster.dask import (
    PROFILE_ENV,
    ClusterOptions,
    build_cluster_spec,
    dask_client,
    unique_cluster_name,
)


def test_kubernetes_spec_uses_secret_references() -> None:
    options = ClusterOptions(
        cluster="kubernetes",
        n_workers=3,
        worker_cpu="2",
        worker_memory="8Gi",
        image="registry.local/eclss:abc",
        s3_secret_name="minio-creds",
        s3_endpoint="http://minio.example:9000",
    )
    spec = build_cluster_spec(options, "preprocess-x")
    assert spec["kind"] == "DaskCluster" and spec["metadata"]["name"] == "preprocess-x"
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 3
    container = worker["spec"]["containers"][0]
    assert container["image"] == "registry.local/eclss:abc"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.example:9000"
    assert env[PROFILE_ENV]["value"] == "False"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "minio-creds", "key": key}
        assert "value" not in env[key]
    assert spec["spec"]["scheduler"]["spec"]["containers"][0]["image"] == "registry.local/eclss:abc"


def test_no_credential_value_reaches_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret-value")
    options = ClusterOptions(cluster="kubernetes", image="img", s3_secret_name="creds")
    assert "sentinel-secret-value" not in json.dumps(build_cluster_spec(options, "n"))


def test_kubernetes_needs_an_image() -> None:
    with pytest.raises(ValueError, match="--worker-image"):
        build_cluster_spec(ClusterOptions(cluster="kubernetes"), "n")


def test_names_are_unique() -> None:
    names = {unique_cluster_name() for _ in range(100)}
    assert len(names) == 100 and all(n.startswith("preprocess-") for n in names)


def test_local_cluster_starts_and_always_stops() -> None:
    with pytest.raises(RuntimeError), dask_client(ClusterOptions(n_workers=1)) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        cluster = client.cluster
        raise RuntimeError("task failed")
    assert cluster.status.name == "closed"


@pytest.mark.parametrize("profile", [False, True])
def test_worker_profiler_only_when_asked(profile: bool) -> None:
    with dask_client(ClusterOptions(n_workers=1, profile_workers=profile)) as client:
        (worker,) = client.cluster.workers.values()
        assert ("profile" in worker.periodic_callbacks) is profile


def test_bad_cluster_options() -> None:
    with pytest.raises(ValueError, match="--cluster must be"), dask_client(ClusterOptions(cluster="yarn")):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="--n-workers"), dask_client(ClusterOptions(n_workers=0)):
        pass
