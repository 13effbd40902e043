"""The contract between evaluation and deployment: what the deploy gate compares and what the
model server flags with, read from the evaluation summary in one typed place."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from container_component_src.storage import InputError


@dataclass(frozen=True)
class DeployDecision:
    """The `deploy` block of an evaluation summary.

    Attributes:
        fc1: Fc1 at the label-free threshold, of the scores as evaluated: per row when
            `smoothing_window` is 1, else of their trailing median over that many rows.
        threshold: The label-free threshold on per-row scores: what the served model flags with
            (served rows are scored one at a time, never smoothed).
        evaluated_threshold: The label-free threshold of the evaluated (possibly smoothed) scores.
        smoothing_window: Rows in the trailing median of the evaluated scores (1: none).
        val_quantile: The quantile of validation scores of the quantile method.
        threshold_method: How both thresholds came from validation scores ("quantile" or "pot").
    """

    fc1: float
    threshold: float
    evaluated_threshold: float
    smoothing_window: int
    val_quantile: float
    threshold_method: str = "quantile"

    @property
    def fc1_name(self) -> str:
        """What the gate's Fc1 measures, for messages and reports."""
        if self.smoothing_window == 1:
            return "Fc1"
        return f"Fc1 of scores smoothed over {self.smoothing_window} rows (served rows are not smoothed)"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fc1_name": self.fc1_name}

    @classmethod
    def from_summary(cls, summary: dict[str, Any], source: str = "the evaluation summary") -> DeployDecision:
        """Read the decision from a summary written by `evaluate`.

        Raises:
            InputError: The summary has no complete deploy block (not written by evaluate).
        """
        block = summary.get("deploy") if isinstance(summary, dict) else None
        try:
            return cls(
                fc1=float(block["fc1"]),
                threshold=float(block["threshold"]),
                evaluated_threshold=float(block["evaluated_threshold"]),
                smoothing_window=int(block["smoothing_window"]),
                val_quantile=float(block["val_quantile"]),
                threshold_method=str(block.get("threshold_method", "quantile")),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise InputError(
                f"{source} has no complete 'deploy' block ({exc!r}): was it written by evaluate?"
            ) from None
