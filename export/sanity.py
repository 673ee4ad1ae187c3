"""Input checks that travel with the model, set on the training images.

Three measures, all computed inside the exported graph so every language gets them:

- ``contrast`` (grey-level spread): a blank, black, white or uniformly grey frame has ~0;
- ``stain_coverage`` (share of stain-coloured pixels): a photo that is not a stained smear
  has almost none;
- ``ood_score`` (distance of the network's features to the training images', see
  :mod:`leukedge.modelkit.graph.postprocess`): noise, other tissue, other scenes.

Limits are set from the training images' own distribution: half their 0.1% quantile for the two
minimums, and ``OOD_MARGIN`` times their ``OOD_QUANTILE`` quantile for the score, so that about
1% or fewer of genuine smears trip a check (measured per fold in docs/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from leukedge.runtime.contract import SanityLimits
from leukedge.modelkit.graph.postprocess import OodStats, fit_ood_stats
from leukedge.modelkit.graph.runner import PreprocessRunner

MIN_QUANTILE = 0.001
MIN_FACTOR = 0.5
OOD_QUANTILE = 0.995
OOD_MARGIN = 1.5
BATCH = 32


@dataclass(frozen=True)
class SanityFit:
    """The OOD statistics, the limits, and the training images' measures they came from."""

    ood: OodStats
    limits: SanityLimits
    summary: dict


def _measures(runner: PreprocessRunner, net_session: Any, images: Sequence[np.ndarray]
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    features, quality = [], {}
    for start in range(0, len(images), BATCH):
        chunk = list(images[start:start + BATCH])
        same = len({im.shape for im in chunk}) == 1
        groups = [np.stack(chunk)] if same else [im[None] for im in chunk]
        for batch in groups:
            feeds = runner(batch)
            features.append(net_session.run(["features"], feeds)[0])
            for name, value in runner.quality(batch).items():
                quality.setdefault(name, []).append(value)
    return np.concatenate(features), {k: np.concatenate(v) for k, v in quality.items()}


def fit_sanity(runner: PreprocessRunner, net_session: Any,
               images: Sequence[np.ndarray]) -> SanityFit:
    """Fit the OOD statistics and the limits on (un-augmented) training images.

    Args:
        runner: the model's preprocessing graph.
        net_session: an onnxruntime session of the network (outputs ``features``).
        images: decoded uint8 RGB training images.

    Raises:
        ValueError: fewer than 10 images.
    """
    if len(images) < 10:
        raise ValueError(f"setting the input checks needs at least 10 training images, "
                         f"got {len(images)}")
    features, quality = _measures(runner, net_session, images)
    ood = fit_ood_stats(features)
    scores = ood.score(features)
    limits = SanityLimits(
        min_contrast=round(MIN_FACTOR * float(np.quantile(quality["contrast"], MIN_QUANTILE)), 4),
        min_stain_coverage=round(MIN_FACTOR * float(np.quantile(quality["stain_coverage"],
                                                                MIN_QUANTILE)), 4),
        max_ood_score=round(OOD_MARGIN * float(np.quantile(scores, OOD_QUANTILE)), 3))
    summary = {"images": len(images),
               "contrast_quantiles": _quantiles(quality["contrast"]),
               "stain_coverage_quantiles": _quantiles(quality["stain_coverage"]),
               "ood_score_quantiles": _quantiles(scores),
               "rule": f"min = {MIN_FACTOR} x {MIN_QUANTILE:.1%} quantile; max ood = "
                       f"{OOD_MARGIN} x {OOD_QUANTILE:.1%} quantile (training images)"}
    return SanityFit(ood, limits, summary)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"q{q:g}": round(float(np.quantile(values, q)), 5)
            for q in (0.0, 0.001, 0.01, 0.5, 0.99, 0.995, 1.0)}
