"""From a training run's ``run.json`` (plain JSON; export never imports train/) to the contract."""

from __future__ import annotations

import warnings
from typing import Any, Optional

from leukedge.runtime.contract import DEFAULT_CLASSES, ModelContract
from leukedge.runtime.preprocess import PreprocessSpec


def model_input_size(model: Any) -> tuple[int, int]:
    """(height, width) of the Keras model's first input."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise ValueError(f"expected an NHWC RGB input with a fixed size, got shape {shape}")
    return int(shape[1]), int(shape[2])


def run_defaults(model: Any, run: Optional[dict]) -> dict:
    """``run`` completed with what the model itself says; warns when there was no run.json.

    Raises:
        ValueError: when run.json's input size does not match the model's.
    """
    size = model_input_size(model)
    if run is None:
        warnings.warn("No run.json: the contract gets the default classes "
                      f"{list(DEFAULT_CLASSES)} and preprocessing with input size {size}, and no "
                      "provenance or metrics.", UserWarning, stacklevel=3)
        run = {}
    run = dict(run)
    run.setdefault("classes", list(DEFAULT_CLASSES))
    run.setdefault("preprocessing", PreprocessSpec(input_size=size).to_dict())
    run_size = tuple(PreprocessSpec.from_dict(run["preprocessing"]).input_size)
    if run_size != size:
        raise ValueError(f"run.json preprocessing input_size {list(run_size)} does not match the "
                         f"Keras model's input {list(size)}")
    return run


def contract_from_run(run: dict, input_names: dict[str, str], output_name: str,
                      n_parameters: int, opset: int) -> ModelContract:
    """The FP32 contract of an exported hybrid, from run.json and the export settings."""
    spec = PreprocessSpec.from_dict(run["preprocessing"])
    model_info = {
        "parameters": n_parameters,
        "input_size": list(spec.input_size),
        "seg_features": run.get("seg_features"),
        "opset": opset,
    }
    provenance = {k: run[k] for k in ("data_manifest_sha256", "split_manifest_sha256", "seed",
                                      "run_id") if run.get(k) is not None}
    if run.get("model_sha256"):
        provenance["keras_sha256"] = run["model_sha256"]
    provenance["exporter"] = _exporter_versions()
    contract = ModelContract.for_hybrid(
        spec, classes=tuple(run["classes"]), image_input=input_names["image"],
        masked_input=input_names.get("masked_image", "masked_image"), output_name=output_name,
        precision="fp32", backbone=str(run.get("backbone", "unknown")), model_info=model_info,
        provenance=provenance, metrics=run.get("test_metrics"),
        review_below=float(run.get("review_below", 0.0)))
    if "masked_image" not in input_names:  # an image-only model (no segmentation branch)
        contract = contract.with_updates(
            inputs=tuple(i for i in contract.inputs if i.content == "image"))
    return contract


def _exporter_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
