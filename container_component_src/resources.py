"""Will a step fit its pod? Checked before the heavy work, so that a run too big for its memory
limit stops with the setting to raise instead of being OOM-killed halfway.

A step's peak memory is modelled from what `benchmarks/bench_step_sizing.py` measured (181
channels on a 10 s grid, 91 and 365 days of archive): a base (interpreter, libraries, model),
bytes per channel of each row held in a batch, and, for the steps that hold their input (training:
each process its shard; local tuning: one memory-mapped copy for all its workers), bytes per
channel of each input row. The limit is the pod's, read from its cgroup (none outside a container:
then nothing is checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from container_component_src.config import ConfigError

GIB = 2**30
# cgroup v2, then v1: where a container's memory limit is.
CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
# A v1 cgroup without a limit reports a number near 2^63.
NO_LIMIT = 2**60
# Set in pods the package starts (PyTorchJob replicas, Katib trials): the setting that sizes them.
MEMORY_SETTING_ENV = "ECLSS_POD_MEMORY_SETTING"


@dataclass(frozen=True)
class Footprint:
    """A step's peak memory as a function of its input.

    Attributes:
        base_gib: Memory of a process without data (interpreter, libraries, a model).
        batch_cell_bytes: Bytes per channel of each row held in batches at once.
        cell_bytes: Bytes per channel of each input row held (see `shared`).
        row_bytes: Bytes per input row (scores kept per row).
        shared: The processes share one copy of the input (memory-mapped) instead of each holding
            its shard.
    """

    base_gib: float
    batch_cell_bytes: float = 0.0
    cell_bytes: float = 0.0
    row_bytes: float = 0.0
    shared: bool = False

    def need_bytes(self, rows: int, channels: int, batch_rows: int, processes: int = 1, shards: int = 1) -> float:
        """Peak bytes of `processes` processes in one pod, each holding `1 / shards` of the rows."""
        held = rows if self.shared else processes * rows / shards
        each = self.base_gib * GIB + self.batch_cell_bytes * min(rows, batch_rows) * channels + self.row_bytes * rows
        return processes * each + self.cell_bytes * held * channels


# Fitted to the sizing benchmark's peaks (README, "Sizing of every step"), rounded up.
FOOTPRINTS = {
    # float64 moments with their temporaries, and the kind sample (at most 200 k rows).
    "fit-scaler": Footprint(base_gib=0.35, batch_cell_bytes=40.0),
    # The models, a batch of channels, and ~95 bytes per validation and test row at the peak: each
    # detector's scores in the results table (once), the report's and the sweeps' working arrays.
    "evaluate": Footprint(base_gib=1.0, batch_cell_bytes=24.0, row_bytes=128.0),
    # A rank's shard of the training and validation sets as float32 (4 bytes a cell, read straight
    # into place), a chunk of validation rows being calibrated, and a score per validation row.
    "train": Footprint(base_gib=1.0, cell_bytes=4.5, row_bytes=16.0),
    # The mapped copy of the sets (in the page cache, once), and each worker's libraries.
    "tune": Footprint(base_gib=0.9, cell_bytes=4.5, shared=True),
}


QUANTITY_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


def memory_bytes(quantity: str, setting: str) -> int:
    """A Kubernetes memory quantity ("8Gi", "512M", "1e9") in bytes.

    Raises:
        ConfigError: Not a positive quantity; names `setting`.
    """
    text = str(quantity).strip()
    unit = next((u for u in sorted(QUANTITY_UNITS, key=len, reverse=True) if text.endswith(u)), "")
    try:
        value = float(text[: len(text) - len(unit)]) * QUANTITY_UNITS.get(unit, 1)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{setting}: {quantity!r} is not a memory quantity such as 8Gi or 512Mi")
    return int(value)


def memory_limit(files: tuple[str, ...] = CGROUP_LIMIT_FILES) -> int | None:
    """This container's memory limit in bytes, or None when it has none (or runs outside one)."""
    for name in files:
        path = Path(name)
        if path.is_file():
            text = path.read_text().strip()
            if text == "max" or not text.isdigit() or int(text) >= NO_LIMIT:
                return None
            return int(text)
    return None


def check_fits(
    step: str,
    rows: int,
    channels: int,
    setting: str,
    batch_rows: int,
    processes: int = 1,
    shards: int = 1,
    limit: int | None = None,
) -> None:
    """Stop before the heavy work when the step's modelled peak exceeds the pod's memory limit.

    Args:
        step: A step of `FOOTPRINTS`.
        rows: Rows of its input.
        channels: Channels of its input.
        setting: What to raise, as the user sets it (named in the message).
        batch_rows: Rows a batch holds.
        processes: Processes of the step in this pod (DDP ranks, parallel tuning trials).
        shards: Shards the input is cut into, one per training process in all pods.
        limit: The limit in bytes; this container's when None.

    Raises:
        ConfigError: It will not fit; names the rows, channels, both figures and `setting`.
    """
    limit = memory_limit() if limit is None else limit
    need = FOOTPRINTS[step].need_bytes(rows, channels, batch_rows, processes, shards)
    if limit is not None and need > limit:
        raise ConfigError(
            f"{step}: {rows:,} rows x {channels} channels need about {need / GIB:.1f} GiB, more than the "
            f"{limit / GIB:.1f} GiB this pod may use: raise {setting}"
        )


def check_step_fits(
    step: str,
    inputs: list[str],
    processes: int = 1,
    shards: int = 1,
    batch_rows: int = 65_536,
    pod_memory: str | None = None,
    setting: str | None = None,
) -> None:
    """`check_fits` for a step reading the datasets `inputs` (their rows from their manifests, their
    channels from the first one's columns besides its index), in this pod or, given `pod_memory`
    and its `setting`, in pods about to be started (a PyTorchJob's replicas, Katib's trials). This
    pod's setting is the one its environment names (`MEMORY_SETTING_ENV`, set in the pods the
    package starts), else its task's in `[kubernetes.resources]`.

    Raises:
        ConfigError: It will not fit.
    """
    import os

    from container_component_src import datasets

    rows = sum(datasets.count_rows(url) for url in inputs)
    channels = len(datasets.data_columns(datasets.schema(inputs[0])))
    if pod_memory is not None and setting is not None:
        limit = memory_bytes(pod_memory, setting)
        check_fits(step, rows, channels, setting, batch_rows, processes, shards, limit)
        return
    setting = os.environ.get(MEMORY_SETTING_ENV) or f"[kubernetes.resources.{step}] memory"
    check_fits(step, rows, channels, setting, batch_rows, processes, shards)
