"""The reference study's classical rows: an SVM and XGBoost on hand-made features.

The features are those of :mod:`leukedge.modelkit.graph.features` (HSV histograms with and
without the stain mask, colour moments, mask area, gradient and co-occurrence texture), computed
by running that graph in ONNX Runtime on the preprocessing graph's output, so what the
classifier was fitted on is exactly what the exported model computes.

- ``svm``: scikit-learn ``StandardScaler`` + ``SVC`` (RBF kernel, balanced class weights) with
  Platt probabilities (``CalibratedClassifierCV``, sigmoid, 3 folds); C and gamma by a small
  grid on the validation split.
- ``xgboost``: ``XGBClassifier`` (histogram trees, softprob, balanced sample weights, early
  stopping on the validation split); depth and learning rate by a small grid.

Fitted on the training images and ``bank_copies - 1`` augmented copies of each (the same
augmentation as the CNNs: quarter turns, flips, small affine jitter, stain colour jitter).

The fitted classifier is converted at once (skl2onnx / onnxmltools) and joined behind the
feature graph into the run's ``network.onnx`` (input ``image`` float32 [N, S, S, 3] on 0-255,
outputs ``logits`` = log-probabilities and ``features``), checked against the classifier's own
``predict_proba`` within 1e-4. Nothing is pickled: the run folder holds the ONNX network, and
for XGBoost also the booster's own JSON model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from leukedge.modelkit.graph.features import N_FEATURES, feature_nodes
from leukedge.modelkit.graph.preprocess import OPSET
from leukedge.modelkit.graph.runner import PreprocessRunner
from leukedge.modelkit.run_folder import RunFolder
from leukedge.runtime.files import atomic_write_bytes

from .augment import augment
from .data import run_graph

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
_LOG_FLOOR = 1e-7  # logits = log(max(p, floor)): a probability of 0 stays finite
SVM_GRID = [{"C": c, "gamma_scale": g} for c in (1.0, 10.0, 100.0) for g in (0.5, 1.0, 2.0)]
XGB_GRID = [{"max_depth": d, "learning_rate": lr} for d in (3, 6) for lr in (0.05, 0.15)]


@dataclass
class ClassicalModel:
    """A fitted classical classifier and its ONNX network (features + classifier)."""

    kind: str
    network: Any  # onnx.ModelProto
    params: dict
    estimator: Any = field(default=None, repr=False)
    _session: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"leukedge_{self.kind}"

    def session(self):
        if self._session is None:
            from leukedge.runtime.session import create_session

            self._session, _ = create_session(self.network.SerializeToString(), provider="cpu")
        return self._session

    def logits(self, x: dict) -> np.ndarray:
        """Log-probabilities for the preprocessing graph's output ``x``."""
        return self.session().run(["logits"], {"image": x["image"]})[0]

    def save(self, folder: Path) -> None:
        atomic_write_bytes(RunFolder(folder).network, self.network.SerializeToString())
        if self.kind == "xgboost" and self.estimator is not None:
            raw = self.estimator.get_booster().save_raw(raw_format="json")
            atomic_write_bytes(folder / "xgboost.json", bytes(raw))

    def parameter_count(self) -> dict[str, int]:
        from onnx import numpy_helper

        total = sum(int(numpy_helper.to_array(t).size) for t in self.network.graph.initializer)
        for node in self.network.graph.node:
            for attr in node.attribute:
                total += len(attr.floats) + len(attr.ints)
        return {"total": total, "trainable": total, "non_trainable": 0}


def _features_session(size: tuple[int, int], mask):
    from leukedge.modelkit.graph.features import features_model
    from leukedge.runtime.session import create_session

    session, _ = create_session(features_model(mask, size).SerializeToString(), provider="cpu")
    return session


def image_features(images: Sequence[np.ndarray], runner: PreprocessRunner,
                   batch_size: int = 64) -> np.ndarray:
    """float32 [N, F]: the feature graph on the preprocessing graph's output."""
    session = _features_session(runner.spec.input_size, runner.spec.hsv_mask)
    parts = [session.run(["features"], {"image": run_graph(runner, list(images[s:s + batch_size]))
                                        ["image"]})[0]
             for s in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, N_FEATURES), np.float32)


def _balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return (len(labels) / (n_classes * np.maximum(counts, 1)))[labels]


def _log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1))))


def _fit_svm(x, y, x_val, y_val, n_classes: int, seed: int):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    grid = []
    best = None
    for params in SVM_GRID:
        gamma = params["gamma_scale"] / x.shape[1]  # "scale" on standardised features
        svc = SVC(C=params["C"], gamma=gamma, kernel="rbf", class_weight="balanced")
        # Platt scaling (one sigmoid per class on 3-fold out-of-fold decision values), then
        # one SVC fitted on all rows: scikit-learn's replacement of SVC(probability=True)
        model = make_pipeline(StandardScaler(), CalibratedClassifierCV(
            svc, method="sigmoid", cv=3, ensemble=False))
        model.fit(x, y)
        probs = model.predict_proba(x_val)
        score = (float(np.mean(probs.argmax(1) == y_val)), -_log_loss(probs, y_val))
        grid.append({**params, "val_accuracy": score[0], "val_loss": -score[1]})
        if best is None or score > best[0]:
            best = (score, params, model)
    return best[2], best[1], grid


def _fit_xgboost(x, y, x_val, y_val, n_classes: int, seed: int, threads: int):
    from xgboost import XGBClassifier

    grid = []
    best = None
    for params in XGB_GRID:
        model = XGBClassifier(n_estimators=600, early_stopping_rounds=40, subsample=0.8,
                              colsample_bytree=0.8, tree_method="hist", objective="multi:softprob",
                              eval_metric="mlogloss", random_state=seed, n_jobs=threads,
                              **params)
        model.fit(x, y, sample_weight=_balanced_weights(y, n_classes),
                  eval_set=[(x_val, y_val)], verbose=False)
        probs = model.predict_proba(x_val)
        score = (float(np.mean(probs.argmax(1) == y_val)), -_log_loss(probs, y_val))
        grid.append({**params, "trees": int(model.best_iteration) + 1,
                     "val_accuracy": score[0], "val_loss": -score[1]})
        if best is None or score > best[0]:
            best = (score, {**params, "trees": int(model.best_iteration) + 1}, model)
    model = best[2]
    # refit with the chosen number of trees so the converted model has exactly those
    final = XGBClassifier(n_estimators=best[1]["trees"], subsample=0.8, colsample_bytree=0.8,
                          tree_method="hist", objective="multi:softprob", random_state=seed,
                          n_jobs=threads, max_depth=best[1]["max_depth"],
                          learning_rate=best[1]["learning_rate"])
    final.fit(x, y, sample_weight=_balanced_weights(y, n_classes), verbose=False)
    del model
    return final, best[1], grid


def classifier_onnx(kind: str, estimator) -> Any:
    """The fitted classifier as ONNX: ``features`` float32 [N, F] -> ``probabilities``."""
    from onnx import helper

    if kind == "svm":
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        import warnings

        last = estimator.steps[-1][1]
        with warnings.catch_warnings():  # skl2onnx reads SVC.probA_/probB_, deprecated in 1.9
            warnings.filterwarnings("ignore", message=".*probA_|.*probB_", category=FutureWarning)
            model = convert_sklearn(
                estimator, initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
                options={id(last): {"zipmap": False}}, target_opset={"": OPSET, "ai.onnx.ml": 3})
    else:
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        # onnxmltools converts XGBoost up to opset 15; the result is one
        # ai.onnx.ml TreeEnsembleClassifier node, unchanged at opset 18
        model = convert_xgboost(estimator,
                                initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
                                target_opset=15)
    outputs = [o.name for o in model.graph.output]
    probs = next(n for n in outputs if "prob" in n)
    if probs != "probabilities":
        model.graph.node.append(helper.make_node("Identity", [probs], ["probabilities"],
                                                 name="probabilities_out"))
    return model


def network_model(kind: str, estimator, mask) -> Any:
    """Feature graph + converted classifier: ``image`` -> ``logits`` (log p), ``features``."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    clf = compose.add_prefix(classifier_onnx(kind, estimator), "clf/")
    nodes, inits = feature_nodes(mask, prefix="feat/")
    floor = numpy_helper.from_array(np.array(_LOG_FLOOR, np.float32), "post_floor")
    join = helper.make_node("Identity", ["features"], ["clf/features"], name="clf_in")
    tail = [helper.make_node("Max", ["clf/probabilities", "post_floor"], ["clipped"],
                             name="clip_probs"),
            helper.make_node("Log", ["clipped"], ["logits"], name="log_probs")]
    graph = helper.make_graph(
        nodes + [join] + list(clf.graph.node) + tail, f"leukedge_{kind}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", None, None, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", None]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", N_FEATURES])],
        inits + list(clf.graph.initializer) + [floor])
    ml = max((o.version for o in clf.opset_import if o.domain == "ai.onnx.ml"), default=3)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("ai.onnx.ml", ml)],
                              producer_name="leukedge")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def check_network_parity(network, estimator, x_image: np.ndarray, features: np.ndarray,
                         kind: str) -> dict:
    """ONNX network on images vs the classifier's predict_proba on the same features."""
    from leukedge.runtime.session import create_session

    session, _ = create_session(network.SerializeToString(), provider="cpu")
    logits, onnx_features = session.run(["logits", "features"], {"image": x_image})
    expected = estimator.predict_proba(features.astype(np.float32))
    diff = float(np.max(np.abs(np.exp(logits) - expected))) if len(expected) else 0.0
    feature_diff = float(np.max(np.abs(onnx_features - features))) if len(features) else 0.0
    report = {"n_images": int(len(expected)), "max_abs_diff": diff,
              "tolerance": PARITY_TOLERANCE, "feature_max_abs_diff": feature_diff,
              "source": f"{kind} predict_proba"}
    if not diff <= PARITY_TOLERANCE:
        raise ValueError(f"the ONNX {kind} differs from the fitted {kind} by {diff:.2e} "
                         f"(tolerance {PARITY_TOLERANCE:g}); nothing was written")
    return report


def fit_classical(config, settings, prepared, partition, runner: PreprocessRunner):
    """Fit the SVM or XGBoost row on one partition; a FitOutcome with a ClassicalModel."""
    from .two_phase import FitOutcome

    kind = config.backbone
    started = time.perf_counter()
    images, labels = prepared.images, prepared.labels
    n_classes = len(prepared.dataset.classes)
    train_images = [images[i] for i in partition.train]
    copies = [train_images]
    for copy in range(1, settings.bank_copies if settings.augment.enabled else 1):
        copies.append([augment(im, settings.augment,
                               np.random.default_rng([settings.bank_seed, copy, int(i)]))
                       for im, i in zip(train_images, partition.train)])
    x = np.concatenate([image_features(c, runner) for c in copies])
    y = np.tile(labels[partition.train], len(copies))
    x_val = image_features([images[i] for i in partition.val], runner)
    y_val = labels[partition.val]
    feature_seconds = time.perf_counter() - started
    log.info("%s: %d x %d features in %.0f s", kind, *x.shape, feature_seconds)
    if kind == "svm":
        estimator, params, grid = _fit_svm(x, y, x_val, y_val, n_classes, settings.seed)
    else:
        import os

        estimator, params, grid = _fit_xgboost(x, y, x_val, y_val, n_classes, settings.seed,
                                               min(4, os.cpu_count() or 1))
    network = network_model(kind, estimator, runner.spec.hsv_mask)
    check_images = [images[i] for i in partition.val[:64]]
    parity = check_network_parity(network, estimator, run_graph(runner, check_images)["image"],
                                  x_val[:64], kind)
    seconds = time.perf_counter() - started
    history = {"grid": grid, "chosen": params, "phase": [], "val_loss": [
        min(g["val_loss"] for g in grid)]}
    notes = [f"{kind}: {len(y)} training rows ({len(copies)} copies of {len(partition.train)} "
             f"images), {N_FEATURES} features, chosen {params}",
             f"ONNX network vs {kind}: max |dp| {parity['max_abs_diff']:.1e} on "
             f"{parity['n_images']} validation images"]
    model = ClassicalModel(kind, network, params, estimator)
    return FitOutcome(model=model, history=history, seconds=seconds,
                      train_images_per_second=len(y) / max(seconds, 1e-9), notes=notes)


def load_network(path: str | Path) -> Any:
    """A run folder's ``network.onnx`` (ValueError when it is missing or unreadable)."""
    import onnx

    try:
        return onnx.load(str(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the classical network {str(path)!r}: {e}") from e
    except Exception as e:  # protobuf's DecodeError
        raise ValueError(f"{str(path)!r} is not an ONNX file ({type(e).__name__})") from e
