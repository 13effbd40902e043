"""Every closed set of choices, defined once: config.toml, the CLI, the library and the pipeline
all use these enums (a StrEnum member equals its string, so values travel as plain text)."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from container_component_src.errors import OptionError


class Aggregation(StrEnum):
    """How the samples within one grid period combine."""

    mean = "mean"
    min = "min"
    max = "max"
    median = "median"
    first = "first"
    last = "last"


class DaskCluster(StrEnum):
    """Where preprocessing's Dask runs."""

    local = "local"
    kubernetes = "kubernetes"


class ScalerKind(StrEnum):
    """standard: mean / standard deviation; robust: median / interquartile range; minmax."""

    standard = "standard"
    robust = "robust"
    minmax = "minmax"


class ModelKind(StrEnum):
    """point: the VAE sees one row; window: it sees the last `window` rows."""

    point = "point"
    window = "window"


class LrScaling(StrEnum):
    """How the learning rate follows the batch size (relative to a batch of 512)."""

    none = "none"
    sqrt = "sqrt"
    linear = "linear"


class Precision(StrEnum):
    """Lightning's precision settings the training offers."""

    full = "32-true"
    bf16 = "bf16-mixed"
    fp16 = "16-mixed"


class CompileMode(StrEnum):
    """torch.compile for the training step: off, or one of its modes ("reduce-overhead" captures
    the step in CUDA graphs on a GPU)."""

    none = "none"
    default = "default"
    reduce_overhead = "reduce-overhead"
    max_autotune = "max-autotune"


class ThresholdMethod(StrEnum):
    """How the label-free threshold comes from validation scores: a quantile, or peaks over
    threshold (extreme value theory, as SPOT)."""

    quantile = "quantile"
    pot = "pot"


class ThresholdFollow(StrEnum):
    """Whether the label-free threshold follows each run's median score, or its median and
    lower-quartile spread, or its median and interquartile range (`evaluation.follow`), or stays
    as validation set it; or which of these the deploy gate finds best (`auto`, resolved in
    evaluation to one of the others)."""

    none = "none"
    median = "median"
    spread = "spread"
    iqr = "iqr"
    auto = "auto"

    @classmethod
    def rules(cls) -> list[ThresholdFollow]:
        """The rules a threshold can follow, simplest first (`auto` picks one of them)."""
        return [cls.none, cls.median, cls.spread, cls.iqr]


class TuneBackend(StrEnum):
    local = "local"
    katib = "katib"


class TuneAlgorithm(StrEnum):
    """Katib's algorithm names; optuna runs them locally."""

    random = "random"
    tpe = "tpe"
    grid = "grid"
    bayesianoptimization = "bayesianoptimization"


class TrainBackend(StrEnum):
    local = "local"
    pytorchjob = "pytorchjob"


class Accelerator(StrEnum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


class ServingBackend(StrEnum):
    local = "local"
    kserve = "kserve"


class DeploymentMode(StrEnum):
    """KServe's deployment modes."""

    raw = "RawDeployment"
    serverless = "Serverless"


class ServeRole(StrEnum):
    combined = "combined"
    predictor = "predictor"
    transformer = "transformer"


class Protocol(StrEnum):
    v1 = "v1"
    v2 = "v2"


E = TypeVar("E", bound=StrEnum)


def choice(kind: type[E], value: str, where: str) -> E:
    """`value` as a member of `kind`.

    Raises:
        OptionError: Not one of the choices; the message names `where` and lists them.
    """
    try:
        return kind(value)
    except ValueError:
        raise OptionError(f"{where} must be one of {', '.join(kind)}, got {value!r}") from None
