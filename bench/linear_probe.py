"""Linear probe: what the ImageNet weights of EfficientNet-Lite0 are worth on smears.

The same backbone, once with the ported ImageNet weights and once randomly initialised, is run
frozen over every development image (224 px, the model's preprocessing graph); a logistic
regression (standardised features, balanced class weights) is fitted on the pooled features in
the grouped 5-fold cross-validation of `leukedge crossval` (same folds: duplicate groups never
straddle two). A port that mapped a layer wrongly would give features barely better than random
ones; the gap is the evidence that the weights arrived intact and carry over to smears.

    python bench/linear_probe.py --data ../shared/data/ALL --json docs/results/linear_probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from leukedge.modelkit.dataset import discover_dataset  # noqa: E402
from leukedge.modelkit.graph.runner import PreprocessRunner  # noqa: E402
from leukedge.modelkit.splits import make_folds  # noqa: E402
from leukedge.runtime.files import atomic_write_text  # noqa: E402
from leukedge.train.data import run_graph  # noqa: E402
from leukedge.train.fit import prepare_images  # noqa: E402
from leukedge.train.model import HybridConfig, build_parts  # noqa: E402
from leukedge.train.recipes import CV_SEED  # noqa: E402


def pooled_features(weights, images, config: HybridConfig, batch: int = 32) -> np.ndarray:
    import keras

    keras.utils.set_random_seed(0)
    full = build_parts(config, weights).full
    extractor = keras.Model(full.inputs, full.get_layer("features").output)
    runner = PreprocessRunner(config.preprocess_spec())
    return np.concatenate([np.asarray(extractor(run_graph(runner, images[s:s + batch]),
                                                training=False))
                           for s in range(0, len(images), batch)])


def probe(features: np.ndarray, labels: np.ndarray, fold_of: np.ndarray) -> list[float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for fold in sorted(set(fold_of.tolist())):
        train, test = fold_of != fold, fold_of == fold
        model = make_pipeline(StandardScaler(), LogisticRegression(
            C=1.0, max_iter=3000, class_weight="balanced"))
        model.fit(features[train], labels[train])
        scores.append(float(np.mean(model.predict(features[test]) == labels[test])))
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ALL"))
    parser.add_argument("--seed", type=int, default=CV_SEED,
                        help="fold assignment (leukedge crossval's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    prepared = prepare_images(discover_dataset(args.data))
    folds = make_folds(prepared.dataset, 5, args.seed, prepared.groups)
    fold_of = np.array([folds[p] for p in prepared.relpaths])
    config = HybridConfig.resolve("efficientnet_lite0", seg_features="none")
    result = {"command": " ".join(["python", "bench/linear_probe.py", *sys.argv[1:]]),
              "images": len(prepared.relpaths), "rows": {}}
    for name, weights in (("imagenet", "imagenet"), ("random init", None)):
        started = time.perf_counter()
        features = pooled_features(weights, prepared.images, config)
        scores = probe(features, prepared.labels, fold_of)
        result["rows"][name] = {"accuracy_mean": float(np.mean(scores)),
                                "accuracy_sd": float(np.std(scores, ddof=1)),
                                "folds": [round(s, 4) for s in scores],
                                "feature_dim": int(features.shape[1]),
                                "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result, indent=1))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
