"""Acceptance rules a lab sets for local verification: ``"accuracy>=0.98,flagged<=0.10"``.

Each rule is a metric, ``>=`` or ``<=``, and a number; all must hold. The metrics are read from
the scores of :func:`~leukedge.modelkit.evaluation.review_scores.review_scores`:

=====================  ==========================================================================
``accuracy``           share of readable images classified right
``accuracy_low``       the lower end of its 95% Wilson interval (what a small set can promise)
``flagged``            share of all images a person must look at (flagged, or unreadable)
``unflagged_errors``   share of readable images that are wrong *and* not flagged
``cost``               the reference study's misclassification cost per image
``ece``                expected calibration error of the confidences
``min_recall``         the lowest per-class recall among the classes present
=====================  ==========================================================================

:data:`DEFAULT_RULES` apply when a lab sets none (docs/validate.md says why these numbers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

DEFAULT_RULES = "accuracy>=0.98,flagged<=0.10,unflagged_errors<=0.005"
METRICS = ("accuracy", "accuracy_low", "flagged", "unflagged_errors", "cost", "ece",
           "min_recall")
_RULE = re.compile(r"^\s*([a-z_]+)\s*(>=|<=)\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


@dataclass(frozen=True)
class Rule:
    metric: str
    op: str
    bound: float

    @property
    def text(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    def holds(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound


def parse_rules(text: Optional[str]) -> list[Rule]:
    """``"accuracy>=0.98,flagged<=0.10"`` -> rules; None -> :data:`DEFAULT_RULES`.

    Raises:
        ValueError: naming ``--accept``, the part that is wrong and the valid metrics.
    """
    rules = []
    for part in (DEFAULT_RULES if text is None else text).split(","):
        if not part.strip():
            continue
        match = _RULE.match(part)
        if match is None or match.group(1) not in METRICS:
            raise ValueError(f"--accept: cannot read {part.strip()!r}; write METRIC>=NUMBER or "
                             f"METRIC<=NUMBER, comma-separated; metrics: {', '.join(METRICS)}")
        rules.append(Rule(match.group(1), match.group(2), float(match.group(3))))
    if not rules:
        raise ValueError("--accept: no rule given (e.g. \"accuracy>=0.98,flagged<=0.10\")")
    return rules


def metric_values(scores: dict) -> dict[str, float]:
    """The rule metrics of a :func:`review_scores` result (as extended by validation)."""
    n = max(scores["n"], 1)
    recalls = [v["recall"] for v in scores["per_class"].values() if v["support"]]
    return {"accuracy": scores["accuracy"], "accuracy_low": scores["accuracy_ci95"][0],
            "flagged": scores["flagged_rate"], "unflagged_errors": scores["unflagged_errors"] / n,
            "cost": scores.get("cost_per_sample", 0.0), "ece": scores["ece"],
            "min_recall": min(recalls) if recalls else 0.0}


def check_rules(rules: Sequence[Rule], scores: dict) -> list[str]:
    """The rules that do not hold, each with the measured value ("accuracy>=0.98 (0.9712)")."""
    values = metric_values(scores)
    return [f"{r.text} (measured {values[r.metric]:.4g})" for r in rules
            if not r.holds(values[r.metric])]
