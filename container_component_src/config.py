"""Settings: `config.toml` defaults, overridden by `ECLSS_<SECTION>__<KEY>` environment variables.

Only entry points call `load_settings`; library functions take explicit arguments.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import typing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from container_component_src.choices import (
    Accelerator,
    Aggregation,
    CompileMode,
    DaskCluster,
    DeploymentMode,
    LrScaling,
    ModelKind,
    Precision,
    ScalerKind,
    ServingBackend,
    ThresholdFollow,
    ThresholdMethod,
    TrainBackend,
    TuneAlgorithm,
    TuneBackend,
)

ENV_PREFIX = "ECLSS_"
CONFIG_ENV_VAR = "ECLSS_CONFIG"


class ConfigError(ValueError):
    """A configuration file or override is missing or malformed."""


def slug(name: str) -> str:
    """`name` as a lower-case identifier of letters, digits and dashes (`My pump #2` -> `my-pump-2`)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass(frozen=True)
class DataSettings:
    dataset: str
    root: str
    archives: str
    reports: str
    local_pipeline_root: str

    def __post_init__(self) -> None:
        if not slug(self.dataset):
            raise ConfigError(f"[data] dataset = {self.dataset!r}: give the data set a name with a letter or digit")

    def url(self, relative: str) -> str:
        """Join `relative` onto the data root (a local folder or an s3:// URL)."""
        return f"{self.root.rstrip('/')}/{relative.lstrip('/')}"

    def local_folder(self, relative: str) -> str:
        """`relative` inside the data root when that is a local folder; beside the local pipeline
        root, in a folder named after the data set, when the data lives in object storage; an
        absolute path as it is."""
        if Path(relative).is_absolute():
            return relative
        if "://" not in self.root:
            return self.url(relative)
        return str(Path(self.local_pipeline_root).parent / slug(self.dataset) / relative)

    @property
    def slug(self) -> str:
        """The data set's name as a lower-case, dash-separated identifier (`ECLSS` -> `eclss`)."""
        return slug(self.dataset)

    @property
    def archives_url(self) -> str:
        return self.url(self.archives)

    @property
    def reports_url(self) -> str:
        return self.url(self.reports)


@dataclass(frozen=True)
class ColumnSettings:
    timestamp: str
    report_id: str
    report_start: str
    report_end: str
    label: str


@dataclass(frozen=True)
class GeneratorSettings:
    years: list[int]
    days_per_year: int
    sampling_period_s: float
    n_channels: int
    seed: int


@dataclass(frozen=True)
class SplitArchiveSettings:
    partition_period: str


@dataclass(frozen=True)
class PreprocessingSettings:
    resample_period: str
    aggregation: Aggregation
    max_gap_periods: int
    max_missing_share: float
    sample_frac: float
    cluster: DaskCluster
    n_workers: int
    worker_cpu: str
    worker_memory: str
    profile_workers: bool


@dataclass(frozen=True)
class SplitSettings:
    test_periods: str
    test_window_hours: float
    val_share: float
    block_hours: float
    seed: int


@dataclass(frozen=True)
class ScalingSettings:
    kind: ScalerKind
    reference_rows: int


@dataclass(frozen=True)
class TrainingSettings:
    backend: TrainBackend
    replicas: int
    replica_memory: str
    timeout_s: int
    poll_s: float
    max_epochs: int
    min_steps: int
    patience: int
    accelerator: Accelerator
    devices: int
    num_nodes: int
    seed: int
    deterministic: bool
    precision: Precision
    compile: CompileMode
    learning_rate: float
    batch_size: int
    beta: float
    hidden_size: int
    latent_dim: int
    mse_weight: float
    n_hidden_layers: int
    model: ModelKind
    window: int
    lr_scaling: LrScaling
    mode_weight: float
    drift_weight: float
    named_weights: dict[str, float]


@dataclass(frozen=True)
class TuningSettings:
    backend: TuneBackend
    algorithm: TuneAlgorithm
    parallel_trials: int
    trial_memory: str
    timeout_s: int
    poll_s: float
    max_trials: int
    max_failed_trials: int
    epochs_per_trial: int
    min_steps_per_trial: int
    search_space: str


@dataclass(frozen=True)
class EvaluationSettings:
    smoothing_window: int
    threshold_method: ThresholdMethod
    val_quantile: float
    pot_risk: float
    pot_level: float
    n_thresholds: int
    low_quantile: float
    high_quantile: float
    worst_events: int
    deploy_threshold: float
    promise_tolerance: float
    threshold_follow: ThresholdFollow
    follow_window: int


@dataclass(frozen=True)
class ServingSettings:
    backend: ServingBackend
    name: str
    http_port: int
    grpc_port: int
    max_batch_rows: int
    max_request_bytes: int
    request_timeout_s: float
    max_concurrent_requests: int
    model_control: bool
    local_model_dir: str
    model_store: str
    deployment_mode: DeploymentMode
    service_account: str
    gpus: int
    cpu: str
    memory: str
    timeout_s: int
    poll_s: float


@dataclass(frozen=True)
class KubernetesSettings:
    resources: dict[str, dict[str, str]]
    train_gpus: int
    gpu_resource: str
    node_selector: dict[str, str]
    gpu_node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    image_pull_secret: str
    retries: int
    timeout_s: int


@dataclass(frozen=True)
class PlatformSettings:
    namespace: str
    experiment: str
    minio_endpoint: str
    s3_secret_name: str
    image: str


@dataclass(frozen=True)
class Settings:
    data: DataSettings
    columns: ColumnSettings
    generator: GeneratorSettings
    split_archives: SplitArchiveSettings
    preprocessing: PreprocessingSettings
    split: SplitSettings
    scaling: ScalingSettings
    training: TrainingSettings
    tuning: TuningSettings
    evaluation: EvaluationSettings
    serving: ServingSettings
    kubernetes: KubernetesSettings
    platform: PlatformSettings


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the config file: `explicit`, then $ECLSS_CONFIG, ./config.toml, the project's own."""
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return Path(explicit)
    candidates = [os.environ.get(CONFIG_ENV_VAR), "config.toml", Path(__file__).resolve().parent.parent / "config.toml"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ConfigError(f"no config.toml found (set {CONFIG_ENV_VAR} or run from the project root)")


def settings_to_json(settings: Settings) -> str:
    """The settings as one line of JSON: what a compiled pipeline carries to its tasks."""
    return json.dumps(dataclasses.asdict(settings), separators=(",", ":"), sort_keys=True)


def settings_from_json(text: str, source: str = "--settings") -> Settings:
    """Settings from `settings_to_json`'s output, checked like a config file (no environment
    overrides: the compiled settings already hold them).

    Raises:
        ConfigError: Not JSON, or a section or key is missing, unknown or of the wrong type.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a JSON object of config sections")
    return _settings_from_raw(raw, {}, Path(source))


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: typing.Mapping[str, str] | None = None,
    dotenv: bool = True,
) -> Settings:
    """Read the config file, apply `.env` (if `dotenv`) and environment overrides.

    Args:
        path: Config file; found by `find_config_file` when omitted.
        environ: Environment to read overrides from; `os.environ` when omitted.
        dotenv: Load `./.env` into the process environment first (existing variables win).

    Returns:
        The frozen settings.

    Raises:
        ConfigError: The file is missing, a section or key is missing or unknown, or an
            override has the wrong type.
    """
    if dotenv and environ is None:
        from dotenv import load_dotenv

        load_dotenv(Path.cwd() / ".env", override=False)
    env = os.environ if environ is None else environ
    config_path = find_config_file(path)
    try:
        raw = tomllib.loads(config_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc
    return _settings_from_raw(raw, env, config_path)


def _settings_from_raw(raw: dict[str, Any], env: typing.Mapping[str, str], config_path: Path) -> Settings:
    sections = {}
    for section in dataclasses.fields(Settings):
        section_type = typing.get_type_hints(Settings)[section.name]
        values = raw.get(section.name)
        if not isinstance(values, dict):
            raise ConfigError(f"{config_path}: missing section [{section.name}]")
        sections[section.name] = _build_section(section_type, section.name, values, env, config_path)
    return Settings(**sections)


def _build_section(
    section_type: type, name: str, values: dict[str, Any], env: typing.Mapping[str, str], path: Path
) -> Any:
    hints = typing.get_type_hints(section_type)
    unknown = set(values) - set(hints)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [{name}]: {', '.join(sorted(unknown))}")
    resolved = {}
    for key, hint in hints.items():
        env_name = f"{ENV_PREFIX}{name}__{key}".upper()
        if env_name in env:
            resolved[key] = _parse_override(env_name, env[env_name], hint)
        elif key in values:
            resolved[key] = _check_type(f"{path} [{name}] {key}", values[key], hint)
        else:
            raise ConfigError(f"{path}: missing key '{key}' in [{name}]")
    return section_type(**resolved)


def _parse_override(env_name: str, raw: str, hint: Any) -> Any:
    if hint is str or (isinstance(hint, type) and issubclass(hint, StrEnum)):
        return _check_type(env_name, raw, hint)
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{env_name}={raw!r} is not a valid {_type_name(hint)}") from exc
    return _check_type(env_name, value, hint)


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    return isinstance(value, hint) and not (isinstance(value, bool) and hint is not bool)


def _check_type(where: str, value: Any, hint: Any) -> Any:
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        if isinstance(value, str) and value in set(hint):
            return hint(value)
        raise ConfigError(f"{where}: expected one of {', '.join(hint)}, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(hint) is dict and typing.get_args(hint)[1] is float and isinstance(value, dict):
        # {"x" = 0} in TOML is an int: a map of floats takes it as one, as a float setting does.
        value = {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in value.items()}
    if _matches(value, hint):
        return value
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is None else str(hint)
