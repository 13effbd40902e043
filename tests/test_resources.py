from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from container_component_src.config import ConfigError
from container_component_src.resources import (
    GIB,
    MEMORY_SETTING_ENV,
    check_fits,
    check_step_fits,
    memory_bytes,
    memory_limit,
)
from tests.dataset_files import write_dataset


def test_the_limit_is_the_cgroups(tmp_path: Path) -> None:
    (tmp_path / "v2").write_text("2147483648\n")
    (tmp_path / "unlimited").write_text("max\n")
    (tmp_path / "v1").write_text(str(2**63 - 4096))
    assert memory_limit((str(tmp_path / "v2"),)) == 2 * GIB
    assert memory_limit((str(tmp_path / "unlimited"), str(tmp_path / "v2"))) is None
    assert memory_limit((str(tmp_path / "v1"),)) is None, "a v1 cgroup without a limit"
    assert memory_limit((str(tmp_path / "absent"),)) is None, "outside a container nothing is checked"


def test_a_step_that_will_not_fit_says_which_setting_to_raise() -> None:
    ten_years = 23_000_000
    with pytest.raises(ConfigError, match=r"train: 23,000,000 rows x 181 channels need about \d+\.\d GiB, more than "):
        check_fits("train", ten_years, 181, "[kubernetes.resources.train] memory", 65_536, limit=8 * GIB)
    check_fits("train", 100_000, 181, "x", 65_536, limit=8 * GIB)
    # Sharded: a PyTorchJob of 4 replicas holds a quarter a replica.
    check_fits("train", ten_years, 181, "[training] replica_memory", 65_536, shards=4, limit=8 * GIB)
    with pytest.raises(ConfigError, match="need about"):
        check_fits("train", ten_years, 181, "x", 65_536, processes=4, shards=4, limit=8 * GIB)
    # Streaming steps need the same memory for a year as for ten: only their batch counts.
    for rows in (3_150_000, ten_years):
        check_fits("fit-scaler", rows, 181, "x", 65_536, limit=2 * GIB)
    # Evaluate keeps scores per validation and test row: ten years' (~11 M) fit its shipped 4 Gi, not 2.
    check_fits("evaluate", 11_200_000, 181, "x", 65_536, limit=4 * GIB)
    with pytest.raises(ConfigError, match="evaluate: 11,200,000 rows"):
        check_fits("evaluate", 11_200_000, 181, "x", 65_536, limit=2 * GIB)
    with pytest.raises(ConfigError, match="tune: .* raise .tuning. trial_memory"):
        check_fits("tune", 3_000_000, 181, "[tuning] trial_memory", 65_536, processes=2, limit=4 * GIB)


def test_the_pod_names_its_own_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = pd.date_range("2021-01-01", periods=1000, freq="10s", tz="UTC")
    frame = pd.DataFrame(np.zeros((1000, 3), np.float32), columns=["a", "b", "c"], index=index)
    write_dataset(str(tmp_path / "d"), frame, part_rows=400)
    monkeypatch.setattr("container_component_src.resources.memory_limit", lambda: 64 * 2**20)
    with pytest.raises(ConfigError, match=r"raise \[kubernetes.resources.evaluate\] memory"):
        check_step_fits("evaluate", [str(tmp_path / "d")])
    monkeypatch.setenv(MEMORY_SETTING_ENV, "[training] replica_memory")
    with pytest.raises(ConfigError, match=r"1,000 rows x 3 channels .* raise \[training\] replica_memory"):
        check_step_fits("train", [str(tmp_path / "d")])


def test_memory_quantities_as_kubernetes_writes_them() -> None:
    assert memory_bytes("8Gi", "s") == 8 * GIB and memory_bytes("512Mi", "s") == 512 * 2**20
    assert (
        memory_bytes("2G", "s") == 2 * 10**9
        and memory_bytes("1e9", "s") == 10**9
        and memory_bytes("64k", "s") == 64_000
    )
    for bad in ("", "lots", "-1Gi", "0", "nanGi", "infMi"):
        with pytest.raises(ConfigError, match=r"\[training\] replica_memory: .* is not a memory quantity"):
            memory_bytes(bad, "[training] replica_memory")


def test_pods_about_to_start_are_checked_against_their_own_setting(tmp_path: Path) -> None:
    index = pd.date_range("2021-01-01", periods=100_000, freq="10s", tz="UTC")
    frame = pd.DataFrame(np.zeros((100_000, 181), np.float32), index=index)
    frame.columns = [f"c{i}" for i in range(181)]
    write_dataset(str(tmp_path / "d"), frame, part_rows=50_000)
    with pytest.raises(ConfigError, match=r"100,000 rows x 181 channels .* raise \[training\] replica_memory"):
        check_step_fits("train", [str(tmp_path / "d")], pod_memory="1Gi", setting="[training] replica_memory")
    check_step_fits("train", [str(tmp_path / "d")], pod_memory="8Gi", setting="[training] replica_memory")
