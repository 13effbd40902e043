import json
import threading
import time

import pytest

from container_component_src.cluster.dask import (
    PROFILE_ENV,
    ClusterOptions,
    build_cluster_spec,
    dask_client,
    step_tasks,
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


def test_local_tasks_run_on_threads_of_this_process_and_stop() -> None:
    with step_tasks(ClusterOptions(n_workers=2)) as tasks:
        assert tasks.threads == 2 and tasks.client is None
        assert tasks.executor.submit(threading.current_thread).result() is not threading.current_thread()
        assert tasks.gather([tasks.executor.submit(sum, [1, n]) for n in range(3)], "t", "task", [1, 1, 1]) == [1, 2, 3]
    with pytest.raises(RuntimeError):
        tasks.executor.submit(sum, [1])


def test_a_failed_task_cancels_the_queued_ones_and_awaits_the_running() -> None:
    ran: list[int] = []
    gate = threading.Event()

    def work(n: int) -> None:
        if n == 0:
            gate.wait(5)
            raise ValueError("task 0 failed")
        gate.set()
        time.sleep(0.2)
        ran.append(n)

    with step_tasks(ClusterOptions(n_workers=2)) as tasks:
        futures = [tasks.executor.submit(work, n) for n in range(20)]
        with pytest.raises(ValueError, match="task 0 failed"):
            tasks.gather(futures, "t", "task", [1] * 20)
        finished = list(ran)
        assert all(f.done() for f in futures)  # nothing still running once the error is raised
    assert 1 <= len(finished) < 19 and sum(f.cancelled() for f in futures) >= 1


def test_bad_cluster_options() -> None:
    with pytest.raises(ValueError, match="--cluster must be"), step_tasks(ClusterOptions(cluster="yarn")):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="--n-workers"), step_tasks(ClusterOptions(n_workers=0)):
        pass
    with pytest.raises(ValueError, match="--n-workers"), dask_client(ClusterOptions(cluster="kubernetes", n_workers=0)):
        pass
