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
from typing import Any, Optional, Sequence

import numpy as np

from leukedge.modelkit.graph.postprocess import OodStats, fit_ood_stats
from leukedge.modelkit.graph.runner import PreprocessRunner
from leukedge.runtime.batching import model_runs
from leukedge.runtime.input_checks import InputChecks

MIN_QUANTILE = 0.001
MIN_FACTOR = 0.5
OOD_QUANTILE = 0.995
OOD_MARGIN = 1.5
# Below this many training images the OOD statistics describe the training images alone (with
# 54 images, 53 principal components pass through every one of them exactly): a run on a lab's
# small folder scored 0.06 on its own images and 25,000-65,000 on new smears of its own site,
# so every new image was "unlike the training images". Such a model gets no OOD check; the
# contrast and stain-coverage checks need no such amount.
MIN_OOD_IMAGES = 200
BATCH = 32


@dataclass(frozen=True)
class InputChecksFit:
    """The OOD statistics (None: too few images), the limits, and the training images'
    measures they came from."""

    ood: Optional[OodStats]
    limits: InputChecks
    summary: dict


def _measures(runner: PreprocessRunner, net_session: Any, images: Sequence[np.ndarray]
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The network's features and the input-check measures of every image (input order)."""
    features, measured = {}, {}
    for indices, batch in model_runs(images, BATCH):
        features.update(zip(indices, net_session.run(["features"], runner(batch))[0]))
        for name, values in runner.measures(batch).items():
            measured.setdefault(name, {}).update(zip(indices, values))
    order = range(len(images))
    return (np.stack([features[i] for i in order]),
            {k: np.array([v[i] for i in order]) for k, v in measured.items()})


def fit_input_checks(runner: PreprocessRunner, net_session: Any,
                     images: Sequence[np.ndarray]) -> InputChecksFit:
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
    features, measured = _measures(runner, net_session, images)
    ood = fit_ood_stats(features) if len(images) >= MIN_OOD_IMAGES else None
    scores = ood.score(features) if ood is not None else None
    limits = InputChecks(
        min_contrast=round(MIN_FACTOR * float(np.quantile(measured["contrast"], MIN_QUANTILE)), 4),
        min_stain_coverage=round(MIN_FACTOR * float(np.quantile(measured["stain_coverage"],
                                                                MIN_QUANTILE)), 4),
        max_ood_score=(round(OOD_MARGIN * float(np.quantile(scores, OOD_QUANTILE)), 3)
                       if scores is not None else None))
    summary = {"images": len(images),
               "contrast_quantiles": _quantiles(measured["contrast"]),
               "stain_coverage_quantiles": _quantiles(measured["stain_coverage"]),
               "ood_score_quantiles": _quantiles(scores) if scores is not None else None,
               "rule": f"min = {MIN_FACTOR} x {MIN_QUANTILE:.1%} quantile; max ood = "
                       f"{OOD_MARGIN} x {OOD_QUANTILE:.1%} quantile (training images)"}
    if ood is None:
        summary["ood_not_set"] = (f"the 'unlike the training images' check needs at least "
                                  f"{MIN_OOD_IMAGES} training images; this run has "
                                  f"{len(images)}, so the model has no such check")
    return InputChecksFit(ood, limits, summary)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"q{q:g}": round(float(np.quantile(values, q)), 5)
            for q in (0.0, 0.001, 0.01, 0.5, 0.99, 0.995, 1.0)}
