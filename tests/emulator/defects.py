"""Re-introduce one realistic defect of each class the emulated Kubeflow must catch, one at a time,
and check that a cluster test fails within five minutes (never hangs):

    poetry run python -m tests.emulator.defects            # all six, ~5 min on 2 cores
    poetry run python -m tests.emulator.defects network    # one class

Each defect is a text replacement in the cluster code, applied to the working tree for its test
run and always undone (a file with uncommitted changes is refused rather than touched). The
pods run this checkout, so they run the defect too. Prints a line per defect; exits 1 when a
defect was missed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = "tests/cluster/test_emulated_cluster.py"
LIMIT_S = 300


@dataclass(frozen=True)
class Defect:
    kind: str  # the class of the list it stands for
    what: str
    file: str
    changes: tuple[tuple[str, str], ...]
    test: str


DEFECTS = (
    Defect(
        "filesystem",
        "replicas write the model into the launcher's folder instead of object storage",
        "container_component_src/cluster/pytorchjob.py",
        (
            ("(train_options, scratch_url, options, settings)", "(train_options, model_dir, options, settings)"),
            ("options)\n        storage.copy_directory(scratch_url, model_dir)", "options)"),
        ),
        "test_train_as_a_pytorchjob_runs_ddp_across_two_replicas",
    ),
    Defect(
        "network",
        "the Dask scheduler listens on its pod's loopback",
        "container_component_src/cluster/dask.py",
        (('["dask", "scheduler", "--host", "0.0.0.0"]', '["dask", "scheduler", "--host", "127.0.0.1"]'),),
        "test_preprocess_on_a_dask_cluster_equals_the_local_cluster",
    ),
    Defect(
        "admission",
        "the master's log is read from a container the pod does not have",
        "container_component_src/cluster/pytorchjob.py",
        (("self.namespace, container=CONTAINER)", 'self.namespace, container="trainer")'),),
        "test_train_as_a_pytorchjob_runs_ddp_across_two_replicas",
    ),
    Defect(
        "storage initializer",
        "the InferenceService drops the service account that holds the S3 secret",
        "container_component_src/cluster/inference_service.py",
        (("account = options.service_account or None", "account = None"),),
        "test_deploy_with_kserve_serves_what_the_local_server_serves",
    ),
    Defect(
        "image",
        "the trials' image loses its tag (`:latest` is pulled)",
        "container_component_src/cluster/katib.py",
        (("image=options.image,", 'image=options.image.rsplit(":", 1)[0],'),),
        "test_tune_with_katib_runs_real_trials",
    ),
    Defect(
        "dask wait",
        "the wait for the Dask scheduler never times out",
        "container_component_src/cluster/dask.py",
        (
            (
                'rsplit(":", 1)\n    deadline = time.monotonic() + options.startup_timeout_s',
                'rsplit(":", 1)\n    deadline = time.monotonic() + float("inf")',
            ),
        ),
        "test_a_scheduler_that_never_answers_is_a_bounded_explained_wait",
    ),
)


def patched(defect: Defect, text: str) -> str:
    """`text` with the defect in.

    Raises:
        ValueError: A change no longer matches exactly one place (the code moved on).
    """
    for old, new in defect.changes:
        if text.count(old) != 1:
            raise ValueError(f"{defect.file}: {old!r} occurs {text.count(old)} times, not once")
        text = text.replace(old, new)
    return text


def replay(defect: Defect) -> tuple[bool, float, str]:
    """Run the defect's test with the defect in; whether it failed, its seconds and its summary."""
    path = ROOT / defect.file
    if subprocess.run(["git", "diff", "--quiet", "--", defect.file], cwd=ROOT).returncode != 0:
        raise SystemExit(f"{defect.file} has uncommitted changes: commit or stash them first")
    original = path.read_text()
    path.write_text(patched(defect, original))
    started = time.monotonic()
    try:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{TESTS}::{defect.test}"]
        try:
            run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=LIMIT_S)
            failed, out = run.returncode != 0, run.stdout
        except subprocess.TimeoutExpired:
            failed, out = False, f"still running after {LIMIT_S} s"
    finally:
        path.write_text(original)
    lines = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR", "E "))]
    return failed, time.monotonic() - started, (lines[0] if lines else out.strip().splitlines()[-1])[:160]


def main(kinds: list[str]) -> int:
    missed = 0
    for defect in DEFECTS:
        if kinds and defect.kind not in kinds:
            continue
        caught, seconds, summary = replay(defect)
        caught = caught and seconds < LIMIT_S
        missed += not caught
        verdict = "caught" if caught else "MISSED"
        print(f"{verdict} in {seconds:5.0f} s  [{defect.kind}] {defect.what}\n    {summary}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
