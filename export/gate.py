"""The accuracy gate of quantization: refuse a child model that loses too much.

Both the FP32 parent and the quantized child are scored on the same labelled images with the
reference study's metrics; the child passes when its accuracy drops by at most ``max_drop_pp`` percentage
points and its misclassification cost per sample (seed cost matrix) rises by at most
``max_cost_rise``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_DROP_PP = 1.0
DEFAULT_MAX_COST_RISE = 0.25  # cost units per image; one extra Early<->Pre error in 60 images


@dataclass(frozen=True)
class GateResult:
    """Both evaluations and the verdict."""

    reference: dict
    candidate: dict
    max_drop_pp: float
    max_cost_rise: float
    source: str

    @property
    def accuracy_drop_pp(self) -> float:
        return 100.0 * (self.reference["accuracy"] - self.candidate["accuracy"])

    @property
    def cost_rise(self) -> float:
        return self.candidate["cost_per_sample"] - self.reference["cost_per_sample"]

    @property
    def reasons(self) -> list[str]:
        """Why the gate refuses (empty when it passes)."""
        out = []
        if self.accuracy_drop_pp > self.max_drop_pp + 1e-9:
            out.append(f"accuracy drops {self.accuracy_drop_pp:.2f} pp "
                       f"({self.reference['accuracy']:.2%} -> {self.candidate['accuracy']:.2%}), "
                       f"more than --max-drop {self.max_drop_pp:g} pp")
        if self.cost_rise > self.max_cost_rise + 1e-9:
            out.append(f"cost per sample rises {self.cost_rise:.3f} "
                       f"({self.reference['cost_per_sample']:.3f} -> "
                       f"{self.candidate['cost_per_sample']:.3f}), more than --max-cost-rise "
                       f"{self.max_cost_rise:g}")
        return out

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        keys = ("n", "accuracy", "cost_per_sample", "total_cost", "macro_f1")
        return {"source": self.source, "passed": self.passed, "reasons": self.reasons,
                "max_drop_pp": self.max_drop_pp, "max_cost_rise": self.max_cost_rise,
                "accuracy_drop_pp": self.accuracy_drop_pp, "cost_rise": self.cost_rise,
                "reference": {k: self.reference.get(k) for k in keys},
                "candidate": {k: self.candidate.get(k) for k in keys}}


def check_limits(max_drop_pp: float, max_cost_rise: float) -> None:
    """Validate gate thresholds at the boundary."""
    if max_drop_pp < 0 or max_cost_rise < 0:
        raise ValueError(f"--max-drop and --max-cost-rise must be >= 0, got {max_drop_pp} "
                         f"and {max_cost_rise}")
