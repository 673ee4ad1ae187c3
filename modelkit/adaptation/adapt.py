"""``leukedge adapt``: a one-file model adapted to a site from a few labelled images.

1. The site's folder is read, counted and decoded (:mod:`.site_images`); the parent runs over
   it once, with its members' head inputs as extra outputs (:func:`.site_graph.probe_model`).
2. What the lab will read: each of k stratified folds is held out in turn, the whole fit
   (:func:`.site_fit.fit_site`, with its own inner k-fold) is made on the others, written as a
   model file and run on the held-out images; the pooled held-out predictions are scored beside
   the parent's (``report.json``, ``report.html``; :mod:`.adapt_report`).
3. The model: the same fit on every site image, written as ``model.onnx`` (and
   ``model-int8.onnx``, ``model-int8-avx2.onnx`` where the parent has those siblings), each
   checked to compute what was fitted (:func:`.site_model.check_parity`) and opened as the
   runtime opens a model.

Example:
    >>> result = adapt_to_site("site_images/", "runs/site-a", parent="default")
    >>> result.report["adapted"]["scores"]["accuracy"]
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from leukedge.runtime.classifier import Classifier
from leukedge.runtime.contract import contract_of_proto, save_model
from leukedge.runtime.files import display_path, sha256_file
from leukedge.runtime.models import run_folder_file

from .adapt_report import held_out_metrics, site_result, write_reports
from .offset_logistic import one_blas_thread
from .site_fit import fit_site, fold_count, outer_folds
from .site_graph import feature_tensors, probe_model
from .site_images import MIN_PER_CLASS, SiteImages, load_site
from .site_model import (METHOD, SIBLINGS, build_site_model, check_parity, measure,
                         parent_files, site_contract)

DEFAULT_FOLDS = 5
MODEL_FILE = run_folder_file()
REPORT_JSON, REPORT_HTML = "report.json", "report.html"


@dataclass(frozen=True)
class AdaptResult:
    """The files written and the report (``report.json``'s content)."""

    out_dir: Path
    files: dict[str, Path]
    report: dict


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an existing RUN_DIR unless overwriting, and anything that is not a folder."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {display_path(out_dir)} is a file, not a folder")
    if out_dir.exists() and not overwrite:
        raise ValueError(f"--out {display_path(out_dir)} already exists; pass --overwrite to "
                         f"replace its model files ({MODEL_FILE}, "
                         f"{', '.join(run_folder_file(s) for s in SIBLINGS)}) and reports, or "
                         "choose a new folder")


def _load_proto(path: Path):
    import onnx

    return onnx.load(str(path))


def _classifier(proto, folder: Path, name: str, threads: Optional[int]) -> Classifier:
    path = folder / name
    save_model(proto, path)
    return Classifier(path, provider="cpu", threads=threads)


def _held_out(site: SiteImages, data, parent, proto, folds: int, scratch: Path,
              threads: Optional[int]) -> list:
    """The adapted model's prediction of every site image, from a fit without its fold."""
    fold_of = outer_folds(site.labels, folds)
    predictions: list = [None] * len(site.labels)
    for k in range(folds):
        train, held = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        fit = fit_site(data.subset(train), parent.review_below, parent.input_checks, folds)
        model = build_site_model(proto, site_contract(parent, fit, "", {}), fit)
        clf = _classifier(model, scratch, f"fold{k}.onnx", threads)
        images = [site.images[i] for i in held]
        check_parity(clf, images, fit.probabilities(data.subset(held)))
        for i, p in zip(held, clf.predict_pixels(images)):
            predictions[i] = p
    return predictions


def adapt_to_site(data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                  parent: str | os.PathLike | None = None, overwrite: bool = False,
                  folds: int = DEFAULT_FOLDS, threads: Optional[int] = None,
                  minimum: int = MIN_PER_CLASS,
                  progress: Callable[[str], None] = lambda _: None) -> AdaptResult:
    """Adapt ``parent`` (a bundled name or file; None: the default) to the labelled images in
    ``data_dir`` (``<class>/...``) and write ``out_dir``.

    Raises:
        ValueError: an existing ``out_dir`` without ``overwrite``, a bad folder, too few images
            per class, an unreadable image, or a model adapt cannot edit; each names the flag,
            file or class.
        ModelNotFoundError, ContractError, RuntimeSetupError: the parent cannot be opened.
    """
    with one_blas_thread():
        return _adapt(data_dir, Path(out_dir), parent, overwrite, folds, threads, minimum,
                      progress)


def _adapt(data_dir, out_dir: Path, parent, overwrite: bool, folds: int,
           threads: Optional[int], minimum: int, progress) -> AdaptResult:
    started = time.perf_counter()
    check_out_dir(out_dir, overwrite)
    files = parent_files(parent)
    proto = _load_proto(files.fitted)
    contract = contract_of_proto(proto, str(files.fitted))
    names = feature_tensors(proto)
    site = load_site(data_dir, contract.classes, minimum)
    k = fold_count(np.bincount(site.labels, minlength=len(contract.classes)), folds)
    if k is None:
        raise ValueError(f"too few images per class for k-fold fitting ({site.counts})")
    progress(f"{len(site.labels)} site images ({site.counts}); parent "
             f"{display_path(files.fitted)}")
    with tempfile.TemporaryDirectory(prefix="leukedge-adapt-") as tmp:
        scratch = Path(tmp)
        probe = _classifier(probe_model(proto), scratch, "probe.onnx", threads)
        data, parent_predictions = measure(probe, site.images, site.labels, names)
        progress(f"held-out predictions: {k} folds, each fitted on the others")
        held = _held_out(site, data, contract, proto, k, scratch, threads)
    parent_sha = sha256_file(files.fitted)
    parent_result = site_result(site, parent_predictions, {
        "model": files.fitted.name, "model_sha256": parent_sha, "precision": contract.precision})
    adapted_result = site_result(site, held, {
        "model": f"{MODEL_FILE} (each image from the fit without its fold)",
        "model_sha256": None, "precision": contract.precision})
    provenance = {"site_files_sha256": site.files_sha256, "site_images": len(site.labels),
                  "site_per_class": site.counts, "parent_file": files.fitted.name,
                  "metrics_source": f"{k}-fold held-out site images (leukedge adapt)"}
    fit = fit_site(data, contract.review_below, contract.input_checks, k)
    metrics = held_out_metrics(adapted_result.scores)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"model": out_dir / MODEL_FILE}
    model = build_site_model(proto, site_contract(contract, fit, parent_sha, provenance, metrics),
                             fit)
    unchecked = out_dir / f".{MODEL_FILE}.unchecked"
    save_model(model, unchecked)
    try:  # a file that does not compute what was fitted never takes the model's name
        final = Classifier(unchecked, provider="cpu", threads=threads)
        parity = {"fp32": check_parity(final, site.images, fit.probabilities(data))}
        os.replace(unchecked, written["model"])
    finally:
        unchecked.unlink(missing_ok=True)
    adapted_result.model["model_sha256"] = sha256_file(written["model"])
    for suffix in SIBLINGS:
        done = _sibling(suffix, files, fit, provenance, metrics, out_dir, site, final, threads,
                        overwrite)
        if done is not None:
            key = suffix.replace("-", "_")
            written[f"model_{key}"], parity[f"{key}_agreement"] = done
    report = {"method": METHOD, "folds": k, "site": provenance, "parent": parent_result.to_dict(),
              "adapted": adapted_result.to_dict(), "fit": fit.summary,
              "parity": parity, "files": {k_: v.name for k_, v in written.items()},
              "seconds": round(time.perf_counter() - started, 1)}
    written["report_json"], written["report_html"] = write_reports(
        out_dir / REPORT_JSON, out_dir / REPORT_HTML, report, parent_result, adapted_result)
    return AdaptResult(out_dir, written, report)


def _sibling(suffix: str, files, fit, provenance, metrics, out_dir: Path, site: SiteImages,
             fp32: Classifier, threads: Optional[int], overwrite: bool):
    """The quantized sibling ``suffix`` (int8, int8-avx2) with the same site head: (its path,
    its agreement with FP32 on the site images); None when the parent has no such file (a
    stale one is removed)."""
    path = out_dir / run_folder_file(suffix)
    source = files.siblings.get(suffix)
    if source is None:
        if overwrite and path.is_file():
            path.unlink()
        return None
    proto = _load_proto(source)
    contract = contract_of_proto(proto, str(source))
    model = build_site_model(proto, site_contract(
        contract, fit, sha256_file(source), {**provenance, "parent_file": source.name,
                                             "fp32_sibling": MODEL_FILE}, metrics), fit)
    save_model(model, path)
    clf = Classifier(path, provider="cpu", threads=threads)
    a = np.array([[p.probabilities[c] for c in fp32.classes]
                  for p in fp32.predict_pixels(list(site.images))])
    b = np.array([[p.probabilities[c] for c in clf.classes]
                  for p in clf.predict_pixels(list(site.images))])
    return path, {"argmax_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
                  "max_abs_diff": float(np.abs(a - b).max()), "n_images": len(a)}
