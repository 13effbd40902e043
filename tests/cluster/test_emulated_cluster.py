"""The cluster backends against an emulated Kubeflow that runs every pod they create.

Each test runs the real subcommand with its cluster backend, as the pipeline task does; the
emulator's controllers start the containers of the Experiment's trials, the PyTorchJob's
replicas, the DaskCluster's scheduler and workers and the InferenceService's predictor and
transformer as local processes, with exactly the command, args and env of the spec (S3 keys only
through the Secret). See `tests/emulator/`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3fs import S3FileSystem
from typer.testing import CliRunner

from container_component_src import storage
from container_component_src.main import app
from tests.emulator.cluster import NAMESPACE, RBAC, Emulator, emulated_kubeflow
from tests.emulator.pods import pods_are_isolated

# A defect in the cluster code fails a test within minutes, never hangs it.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]
SECRET = "s3-credentials"
KEYS = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}
SERVING_ACCOUNT = "kserve-minio"  # lists the S3 secret for KServe's storage initializer
SPACE = {
    "learning_rate": {"type": "double", "min": 0.0005, "max": 0.01, "log": True},
    "latent_dim": {"type": "int", "min": 2, "max": 4},
}
runner = CliRunner()


@pytest.fixture
def emulator(tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The emulated cluster, the S3 secret in it, and this process as a task in its launcher pod."""
    with emulated_kubeflow(tmp_path / "cluster", images={"eclss:test"}) as emulated:
        emulated.apply(RBAC)
        endpoint = emulated.add_object_storage(os.environ["AWS_ENDPOINT_URL"], SECRET, KEYS, SERVING_ACCOUNT)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        S3FileSystem.clear_instance_cache()
        emulated.add_launcher_pod()
        for name, value in emulated.launcher_env().items():
            monkeypatch.setenv(name, value)
        yield emulated


@pytest.fixture
def s3_sets(scaled_sets: dict[str, str], s3_bucket: str) -> dict[str, str]:
    """The scaled sets and scaler in object storage, where pods read them."""
    fs, _ = storage.filesystem(s3_bucket)
    urls = {}
    for name in ("train", "val", "test", "scaler"):
        urls[name] = f"{s3_bucket}/sets/{Path(scaled_sets[name]).name}"
        fs.put(scaled_sets[name], urls[name], recursive=Path(scaled_sets[name]).is_dir())  # datasets are folders
    return urls


def _cli(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _cluster_args() -> list[str]:
    return ["--image", "eclss:test", "--namespace", NAMESPACE, "--s3-secret-name", SECRET, "--poll-s", "0.5"]


def _tune_with_katib(sets: dict[str, str], out: Path, *options: str) -> list[str]:
    """The `tune --backend katib` command line a pipeline task runs, on the sets in S3."""
    data = ["--train", sets["train"], "--val", sets["val"], "--scaler", sets["scaler"], "--out", str(out)]
    space = ["--search-space", json.dumps(SPACE), "--accelerator", "cpu"]
    return ["tune", "--backend", "katib", *data, *space, *options, *_cluster_args()]


def _objectives(text: str) -> list[float]:
    # The lines ObjectivePrinter prints (a progress bar may precede one on the same line).
    return [float(m) for m in re.findall(r"epoch=\d+ [^\n]*?val_nll=([-+0-9.eE]+)", text)]


def test_tune_with_katib_runs_real_trials(emulator: Emulator, s3_sets: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "best.json"
    trials = ["--max-trials", "3", "--max-failed-trials", "0", "--parallel-trials", "2", "--epochs-per-trial", "2"]
    _cli(*_tune_with_katib(s3_sets, out, *trials))
    trials = [p for p in emulator.pods.history if "-trial-" in p.name]
    assert len(trials) == 3 and all(t.poll() == 0 for t in trials)
    # Katib's webhook ran each trial as `sh -c "<line> 1>metrics.log 2>&1 && ..."`.
    assert all(t.argv[:2] == ["sh", "-c"] and "1>" in t.argv[2] for t in trials)
    metrics = {t.name: (emulator.pods.log_dir / f"{t.name}-katib" / "metrics.log").read_text() for t in trials}
    best_trial = min(trials, key=lambda t: min(_objectives(metrics[t.name])))
    best = json.loads(out.read_text())
    assert best["objective"]["value"] == pytest.approx(min(_objectives(metrics[best_trial.name])), rel=1e-5)
    argv = shlex.split(best_trial.argv[2])
    assert best["parameters"]["latent_dim"] == int(argv[argv.index("--latent-dim") + 1])
    assert best["parameters"]["learning_rate"] == pytest.approx(float(argv[argv.index("--learning-rate") + 1]))
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps([t.argv for t in trials])
    assert not emulator.objects("experiments") and not emulator.pods.alive(), "the Experiment and its pods are gone"


def test_train_as_a_pytorchjob_runs_ddp_across_two_replicas(
    emulator: Emulator, s3_sets: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    _cli(
        "train",
        "--backend",
        "pytorchjob",
        "--replicas",
        "2",
        "--train",
        s3_sets["train"],
        "--val",
        s3_sets["val"],
        "--scaler",
        s3_sets["scaler"],
        "--out",
        str(out),
        "--scratch",
        f"{s3_bucket}/scratch-run-1",
        "--max-epochs",
        "2",
        "--min-steps",
        "0",
        "--accelerator",
        "cpu",
        *_cluster_args(),
    )
    master, worker = (
        next(p for p in emulator.pods.history if p.name.endswith(kind)) for kind in ("master-0", "worker-0")
    )
    assert master.poll() == 0 and worker.poll() == 0
    for process, rank in ((master, 0), (worker, 1)):
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in process.text(), "both ranks join one process group"
    assert (out / "model.torchscript.pt").is_file() and json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert not storage.exists(f"{s3_bucket}/scratch-run-1"), "the scratch copy is removed"
    assert not emulator.objects("pytorchjobs") and not emulator.pods.alive()


def test_preprocess_on_a_dask_cluster_equals_the_local_cluster(
    emulator: Emulator, tiny_data: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    from container_component_src.data.split_archive import list_archives, run_split_archive

    parts = tmp_path / "parts"
    run_split_archive(list_archives(tiny_data["archives"])[0], str(parts))
    fs, _ = storage.filesystem(s3_bucket)
    fs.put(str(parts), f"{s3_bucket}/parts", recursive=True)
    common = ["preprocess", "--n-workers", "2"]
    _cli(
        *common,
        "--partitions",
        str(parts),
        "--out",
        str(tmp_path / "local"),
        "--quality-report",
        str(tmp_path / "ql.json"),
    )
    _cli(
        *common,
        "--cluster",
        "kubernetes",
        "--partitions",
        f"{s3_bucket}/parts",
        "--out",
        str(tmp_path / "k8s"),
        "--scratch",
        f"{s3_bucket}/scratch-preprocess",
        "--quality-report",
        str(tmp_path / "qk.json"),
        "--worker-image",
        "eclss:test",
        "--namespace",
        NAMESPACE,
        "--s3-secret-name",
        SECRET,
    )
    local, remote = storage.read_parquet(str(tmp_path / "local")), storage.read_parquet(str(tmp_path / "k8s"))
    assert local.equals(remote) and len(local) > 0
    started = [p for p in emulator.pods.history if p.name.startswith("preprocess-")]
    assert [p.argv[:2] for p in started] == [["dask", "scheduler"], ["dask", "worker"], ["dask", "worker"]]
    assert not emulator.objects("daskclusters") and not emulator.pods.alive()
    assert not fs.exists(f"{s3_bucket}/scratch-preprocess"), "the scratch folder is removed"


def test_preprocess_on_a_dask_cluster_without_scratch_fails_loudly(
    emulator: Emulator, tiny_data: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    """The workers are pods with filesystems of their own: a folder of the launcher's as --out
    would end empty on a cluster, so the step fails naming --scratch instead of reporting rows."""
    from container_component_src.data.split_archive import list_archives, run_split_archive

    if not pods_are_isolated():
        pytest.skip("no mount namespaces here: the emulated pods share this machine's disk")
    run_split_archive(list_archives(tiny_data["archives"])[0], str(tmp_path / "parts"))
    fs, _ = storage.filesystem(s3_bucket)
    fs.put(str(tmp_path / "parts"), f"{s3_bucket}/parts", recursive=True)
    cluster = ["--cluster", "kubernetes", "--worker-image", "eclss:test", "--namespace", NAMESPACE]
    out = ["--out", str(tmp_path / "k8s"), "--quality-report", str(tmp_path / "q.json")]
    args = ["preprocess", "--n-workers", "1", "--partitions", f"{s3_bucket}/parts", *out, *cluster]
    result = runner.invoke(app, [*args, "--s3-secret-name", SECRET])
    assert result.exit_code == 1, result.output
    assert "workers in other pods cannot write into this pod's folders; give --scratch" in result.output
    assert not (tmp_path / "k8s").exists(), "nothing is left that looks like an output"


def _dask_options(**changes: Any) -> Any:
    from container_component_src.cluster.dask import ClusterOptions

    base = {"cluster": "kubernetes", "n_workers": 1, "image": "eclss:test", "namespace": NAMESPACE}
    return ClusterOptions(**{**base, "s3_secret_name": SECRET, **changes})


def _broken(monkeypatch: pytest.MonkeyPatch, component: str, script: str) -> None:
    """Make the DaskCluster's `component` pod run `script` instead of Dask."""
    from container_component_src.cluster import dask

    build = dask.build_cluster_spec

    def spec(options: Any, name: str) -> dict[str, Any]:
        body = build(options, name)
        container = body["spec"][component]["spec"]["containers"][0]
        container["command"], container["args"] = ["sh", "-c", script], []
        return body

    monkeypatch.setattr(dask, "build_cluster_spec", spec)


def test_a_failing_dask_worker_pod_fails_the_wait_at_once_with_its_log(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from container_component_src.cluster.dask import dask_client

    _broken(monkeypatch, "worker", "echo cannot reach the scheduler; exit 3")
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="worker pod .* Failed:\n.*cannot reach the scheduler"),
        dask_client(_dask_options()),
    ):
        pass
    assert time.monotonic() - started < 60, "not the 600 s startup timeout"
    assert not emulator.objects("daskclusters"), "the DaskCluster is deleted"


@pytest.mark.timeout(60)
def test_a_scheduler_that_never_answers_is_a_bounded_explained_wait(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from container_component_src.cluster.dask import dask_client

    _broken(monkeypatch, "scheduler", "sleep 300")
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="scheduler at tcp://.* did not answer within 6 s"),
        dask_client(_dask_options(startup_timeout_s=6)),
    ):
        pass
    assert time.monotonic() - started < 60
    assert not emulator.objects("daskclusters") and not emulator.pods.alive()


def test_pods_have_filesystems_of_their_own(emulator: Emulator, tmp_path: Path) -> None:
    """A pod sees neither the launcher's files nor another pod's /tmp, and the launcher does not
    see a pod's; a volume is the pod's at its path."""
    if not pods_are_isolated():
        pytest.skip("no mount namespaces here: the emulated pods share this machine's disk")
    launcher_file = tmp_path / "launcher.txt"
    launcher_file.write_text("the launcher's")
    volume = tmp_path / "volume"
    volume.mkdir()
    owner = emulator.add_launcher_pod("owner-pod")

    def run(name: str, script: str, volumes: dict[str, str] | None = None) -> tuple[int | None, str]:
        container = {"name": "main", "image": "eclss:test", "command": ["sh", "-c", script]}
        process = emulator.pods.run(owner, name, container, volumes=volumes)
        assert process is not None
        return process.process.wait(30), process.text()

    writer = "echo mine > /tmp/pod.txt && echo $HOME && pwd && cat /tmp/pod.txt"
    assert run("writer", writer) == (0, "/tmp\n/tmp\nmine\n")
    assert run("reader", "cat /tmp/pod.txt")[0] != 0, "another pod's /tmp is not this pod's"
    assert run("snooper", f"cat {launcher_file}")[0] != 0, "the launcher's files are not the pod's"
    assert not list(Path("/tmp").glob("pod.txt")), "the launcher does not see a pod's /tmp"
    assert run("mounted", "echo out > /mnt/models/x", {"/mnt/models": str(volume)})[0] == 0
    assert (volume / "x").read_text() == "out\n"


def test_pods_have_networks_of_their_own(emulator: Emulator) -> None:
    """Each pod has its own address and ports: two pods listen on one port; a Service reaches a
    ready pod at its targetPort by DNS name from a pod and by cluster IP from the launcher; a
    server bound to the pod's loopback is never ready and never reached; with no ready pod a
    connection is refused."""
    if emulator.pods.network is None:
        pytest.skip("no network namespaces here: the emulated pods share this machine's loopback")
    owner = emulator.add_launcher_pod("owner-pod")
    handler = "h.SimpleHTTPRequestHandler"
    serve = f"import http.server as h, sys; h.HTTPServer((sys.argv[1], 8080), {handler}).serve_forever()"
    probe = {"httpGet": {"path": "/", "port": "http"}}

    def server(name: str, bind: str) -> None:
        container = {"name": "main", "image": "eclss:test", "command": ["python", "-c", serve, bind]}
        container |= {"ports": [{"name": "http", "containerPort": 8080}], "readinessProbe": probe}
        assert emulator.pods.run(owner, name, container, {"app": name}) is not None
        service = {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]}
        emulator.server.put("services", {"metadata": {"name": name, "namespace": NAMESPACE}, "spec": service})

    server("good", "0.0.0.0")
    server("twin", "0.0.0.0")  # the same port in another pod
    server("loopback", "127.0.0.1")  # on a cluster: a server the Service and the kubelet never reach
    _wait_until(lambda: _ready(emulator, "good") and _ready(emulator, "twin"), 30)
    time.sleep(1)
    assert not _ready(emulator, "loopback"), "the kubelet probes the pod's address, not its loopback"
    ip = {n: emulator.server.get("services", NAMESPACE, n)["spec"]["clusterIP"] for n in ("good", "loopback")}
    assert socket.create_connection((ip["good"], 80), timeout=5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ip["loopback"], 80), timeout=5)
    client = "import socket, urllib.request as u; print(u.urlopen('http://good.team.svc.cluster.local').status); "
    client += "print(socket.gethostname())"
    container = {"name": "main", "image": "eclss:test", "command": ["python", "-c", client]}
    process = emulator.pods.run(owner, "client", container)
    assert process is not None and process.process.wait(30) == 0, process.text()
    assert process.text().split() == ["200", "client"], "by Service name; its hostname is its name"


def _ready(emulator: Emulator, pod: str) -> bool:
    status = emulator.server.get("pods", NAMESPACE, pod)["status"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


def _deploy_args(model: str, s3_bucket: str, tmp_path: Path, account: str = SERVING_ACCOUNT) -> list[str]:
    summary = tmp_path / "summary.json"
    decision = {"fc1": 0.9, "threshold": 5.0, "evaluated_threshold": 5.0, "smoothing_window": 1, "val_quantile": 0.99}
    summary.write_text(json.dumps({"deploy": decision}))
    return [
        "deploy",
        "--backend",
        "kserve",
        "--model",
        model,
        "--summary",
        str(summary),
        "--out",
        str(tmp_path / "endpoint.json"),
        "--model-store",
        f"{s3_bucket}/models",
        "--run-id",
        "run-1",
        "--image",
        "eclss:test",
        "--namespace",
        NAMESPACE,
        "--poll-s",
        "0.5",
        "--timeout-s",
        "90",
        "--service-account",
        account,
    ]


def test_deploy_with_kserve_serves_what_the_local_server_serves(
    emulator: Emulator, trained_model: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    import httpx

    from container_component_src.serving.inference import AnomalyScorer, v1_request, v2_request

    _cli(*_deploy_args(trained_model["model"], s3_bucket, tmp_path))
    url = json.loads((tmp_path / "endpoint.json").read_text())["url"]
    scorer = AnomalyScorer.load(trained_model["model"], threshold=5.0)
    rows = [dict(zip(scorer.channels, [0.1 * (i + 1)] * len(scorer.channels), strict=True)) for i in range(3)]
    import numpy as np

    raw = np.array([[row[c] for c in scorer.channels] for row in rows], dtype=np.float32)
    expected = {"score": scorer.score(scorer.scale(raw))[0].tolist()}
    v1 = httpx.post(f"{url}/v1/models/eclss-anomaly:predict", json=v1_request(rows), timeout=30)
    assert v1.status_code == 200, v1.text
    assert [p["score"] for p in v1.json()["predictions"]] == pytest.approx(list(expected["score"]), rel=1e-5)
    columns = {c: [r[c] for r in rows] for c in scorer.channels}
    v2 = httpx.post(f"{url}/v2/models/eclss-anomaly/infer", json=v2_request(columns), timeout=30)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    assert outputs["score"] == pytest.approx(list(expected["score"]), rel=1e-5)


def test_an_inference_service_is_ready_only_once_its_route_answers(
    emulator: Emulator, trained_model: dict[str, Any], s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod's readiness reaches its Service a moment later (kube-proxy's, Knative's ingress's
    programming); KServe says Ready only when the route answers, so the URL deploy reports takes
    requests at once."""
    from tests.emulator import network

    monkeypatch.setattr(network, "ENDPOINT_POLL_S", 3.0)  # a slow proxy makes the gap wide
    _cli(*_deploy_args(trained_model["model"], s3_bucket, tmp_path))
    url = json.loads((tmp_path / "endpoint.json").read_text())["url"]
    host, _, port = url.removeprefix("http://").partition(":")
    socket.create_connection((host, int(port or 80)), timeout=5).close()


def test_pods_of_a_private_registry_need_the_pull_secret(
    emulator: Emulator, s3_sets: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the image in a private registry, a trial without the pull secret never starts."""
    emulator.pods.pull_secret = "regcred"
    options = ["--max-trials", "1", "--max-failed-trials", "0", "--epochs-per-trial", "1"]
    args = _tune_with_katib(s3_sets, tmp_path / "best.json", *options)
    assert runner.invoke(app, args).exit_code != 0
    monkeypatch.setenv("ECLSS_KUBERNETES__IMAGE_PULL_SECRET", "regcred")
    _cli(*args)
    assert json.loads((tmp_path / "best.json").read_text())["trials"] == 1


def _launch(emulator: Emulator, args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, **emulator.launcher_env(), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "container_component_src.main", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _wait_until(check: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_launcher_leaves_nothing_behind(
    emulator: Emulator, s3_sets: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    options = ["--max-trials", "5", "--epochs-per-trial", "50"]
    args = _tune_with_katib(s3_sets, tmp_path / "best.json", *options)
    launcher = _launch(emulator, args, tmp_path / "launcher.log")
    _wait_until(lambda: emulator.pods.alive())
    launcher.send_signal(sig)
    assert launcher.wait(60) != 0
    if sig == signal.SIGKILL:
        # No handler runs: the Experiment outlives its launcher until the task's pod is deleted
        # (the run deleted, or the pod garbage-collected); then it goes with it.
        assert emulator.objects("experiments"), (tmp_path / "launcher.log").read_text()
        emulator.server.delete("pods", NAMESPACE, "launcher-pod")
    _wait_until(lambda: not emulator.pods.alive() and not emulator.objects("experiments"), 60)
    assert not [p for p in emulator.objects("pods") if p["metadata"]["name"] != "launcher-pod"]


def test_the_storage_initializer_has_only_the_service_accounts_credentials(
    emulator: Emulator, trained_model: dict[str, Any], s3_bucket: str, tmp_path: Path
) -> None:
    """KServe gives the storage initializer the keys of the secret its service account lists, not
    the launcher's: the namespace's `default` account lists none, so the load fails, naming it."""
    result = runner.invoke(app, _deploy_args(trained_model["model"], s3_bucket, tmp_path, account=""))
    assert result.exit_code == 1
    assert "storage initializer of the predictor (service account default)" in str(result.exception)


def test_operators_refuse_what_their_webhooks_refuse(emulator: Emulator) -> None:
    """The operators' released CRDs prune unknown fields and refuse wrong types (422), then the
    Training Operator's and KServe's admission rules apply (400), on create and update."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    from container_component_src.cluster.kube import kube_api_client

    api = CustomObjectsApi(kube_api_client())
    container = {"name": "pytorch", "image": "eclss:test", "command": ["true"]}
    master = {"replicas": 2, "template": {"spec": {"containers": [container]}}}
    job = {"metadata": {"name": "job-1"}, "spec": {"pytorchReplicaSpecs": {"Master": master}}}
    with pytest.raises(ApiException, match=r"Master\]\.replicas: must be 1"):
        api.create_namespaced_custom_object("kubeflow.org", "v1", NAMESPACE, "pytorchjobs", job)
    master["replicas"] = "1"
    with pytest.raises(ApiException, match=r"Master\.replicas in body must be of type integer") as refused:
        api.create_namespaced_custom_object("kubeflow.org", "v1", NAMESPACE, "pytorchjobs", job)
    assert refused.value.status == 422
    predictor = {"containers": [{"name": "kserve-container", "image": "eclss:test"}]}
    isvc = {"metadata": {"name": "Eclss"}, "spec": {"predictor": predictor}}
    with pytest.raises(ApiException, match="a DNS-1035 name"):
        api.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", isvc)
    isvc = {"metadata": {"name": "typo"}, "spec": {"predictor": {**predictor, "minReplica": 2}}}
    created = api.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", isvc)
    assert "minReplica" not in created["spec"]["predictor"], "a misspelled field is pruned, not kept"


def test_pods_pull_only_the_images_the_registry_holds_and_logs_name_a_container(
    emulator: Emulator, s3_sets: dict[str, str], tmp_path: Path
) -> None:
    """An image reference without its tag means `:latest`, which the registry does not hold:
    the trial never starts (ImagePullBackOff) and the tuning fails. A log request for a container
    the pod does not have is refused, as the kubelet refuses it."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    from container_component_src.cluster.kube import kube_api_client

    args = _tune_with_katib(s3_sets, tmp_path / "best.json", "--max-trials", "1", "--max-failed-trials", "0")
    args[args.index("eclss:test")] = "eclss"
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "failed trials" in str(result.exception), result.output
    assert not [p for p in emulator.pods.history if "-trial-" in p.name], "no trial container started"
    owner = emulator.add_launcher_pod("owner-pod")
    emulator.pods.run(owner, "one", {"name": "main", "image": "eclss:test", "command": ["true"]})
    with pytest.raises(ApiException, match="container pytorch is not valid for pod one"):
        CoreV1Api(kube_api_client()).read_namespaced_pod_log("one", NAMESPACE, container="pytorch")


def test_without_the_shipped_role_the_task_fails_in_one_line_naming_it(
    emulator: Emulator, tiny_data: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    """The API server applies RBAC: Kubeflow's `default-editor` may not create a DaskCluster
    unless pipeline/rbac.yaml is applied (the Dask operator grants it nothing)."""
    emulator.server.delete("rolebindings", NAMESPACE, "eclss-pipeline")
    out = ["--out", str(tmp_path / "k8s"), "--quality-report", str(tmp_path / "q.json")]
    cluster = ["--cluster", "kubernetes", "--worker-image", "eclss:test", "--namespace", NAMESPACE]
    args = ["preprocess", "--partitions", f"{s3_bucket}/parts", "--scratch", f"{s3_bucket}/scratch", *out, *cluster]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: Kubernetes refused: daskclusters is forbidden: User ")
    assert 'cannot create resource "daskclusters" in API group "kubernetes.dask.org"' in result.output
    assert "pipeline/rbac.yaml" in result.output and "Traceback" not in result.output


def test_a_launcher_pod_finds_its_namespace_and_credentials_in_the_pod(
    emulator: Emulator, s3_sets: dict[str, str], tmp_path: Path
) -> None:
    """A task as it runs on a cluster: in a pod of its own, as `default-editor`, with no
    --namespace and no kubeconfig: the in-cluster credentials (token, CA over TLS), the namespace
    of its service account, its pod (an owner for what it creates) from its hostname."""
    if emulator.pods.network is None:
        pytest.skip("no network namespaces here: a pod cannot reach the API as on a cluster")
    args = _tune_with_katib(s3_sets, Path("/tmp/best.json"), "--max-trials", "1", "--epochs-per-trial", "1")
    args = args[: args.index("--namespace")] + args[args.index("--namespace") + 2 :]
    script = shlex.join(["python", "-m", "container_component_src.main", *args]) + " && echo BEST && cat /tmp/best.json"
    env = [{"name": "AWS_ENDPOINT_URL", "value": "http://minio-service.kubeflow:9000"}]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": k}}} for k in KEYS]
    container = {"name": "main", "image": "eclss:test", "command": ["sh", "-c", script], "env": env}
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "run-1"}}
    workflow["spec"] = {"templates": [{"podSpec": {"serviceAccountName": "default-editor", "containers": [container]}}]}
    owner = emulator.server.put("workflows", {**workflow, "metadata": {"name": "run-1", "namespace": NAMESPACE}})
    launcher = emulator.pods.run(owner, "run-1-tune", container)
    assert launcher is not None and launcher.process.wait(180) == 0, launcher.text()[-3000:]
    assert json.loads(launcher.text().split("BEST\n")[-1])["trials"] == 1
    assert f"Created Katib Experiment {NAMESPACE}/" in launcher.text()
    assert any(m == "GET" and p.endswith("/pods/run-1-tune") for m, p in emulator.server.requests), "its owner"
