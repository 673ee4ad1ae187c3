"""The model contract: what a leukedge ONNX file promises about itself.

Every leukedge ONNX file carries one JSON document under the ``metadata_props`` key
:data:`CONTRACT_KEY`. Since schema 2 the model is one file that takes raw pixels: one input
``image``, uint8 [N, H, W, 3] RGB of any size, with the preprocessing inside the graph
(:mod:`leukedge.runtime.preprocessing` describes it). The contract names the classes in output
order, the outputs, the calibration (softmax temperature, already applied in the graph), the
review threshold, the input checks' limits, precision, backbone, provenance and metrics. The
runtime configures itself from it; a vendor can read it from any language with any ONNX reader.

The ``heatmap`` output is optional: a contract lists it only when the
graph has it, so files written before it keep their schema and keep working; a reader asks for
it only when the contract lists it (docs/heatmap.md).

A schema-1 contract (leukedge 0.1: preprocessed float inputs) is still *read* by
:func:`contract_document` so ``leukedge info`` can show it, but :func:`read_contract` refuses it
with a message saying how to get a current model.

This module is the only one that writes or reads the contract. Reading works through onnxruntime
alone; writing edits an ``onnx.ModelProto`` that the caller (export/) already holds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Optional

from .errors import LeukedgeError
from .files import atomic_write_bytes
from .input_checks import InputChecks, finite_problem
from .preprocessing import PreprocessSpec

CONTRACT_KEY = "leukedge.contract"
SCHEMA_VERSION = 3  # 3: input_checks (2 called them sanity; both are read)
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CLASSES = ("Benign", "Early", "Pre", "Pro")
INPUT_NAME = "image"
OUTPUT_NAME = "probs"
QUALITY_OUTPUTS = ("stain_fraction", "stain_coverage", "contrast")
DEFAULT_REVIEW_BELOW = 0.8  # a model without a calibrated threshold flags confidence under it
OUTPUT_MEANINGS = {
    "probs": "class probabilities [N, classes], softmax(logits / temperature)",
    "ood_score": "distance of the image's features to the training images' [N]; ~1 typical",
    "stain_fraction": "share of pixels in the reference HSV stained-cell mask [N]",
    "stain_coverage": "share of pixels of a stain colour (hue 0.5-0.85, saturation >= 0.15) [N]",
    "contrast": "standard deviation of the grey level on [0, 1] [N]",
    "stain_mask": "the reference HSV mask at the model's input size, uint8 [N, h, w]",
    "heatmap": "where the network saw the predicted class: its class-activation map "
               "(Grad-CAM) at the last feature resolution, min-max scaled to [0, 1] per image, "
               "float [N, h, w]; CNN models only (optional: older files lack it)",
}
OPTIONAL_OUTPUTS = ("stain_mask", "heatmap")  # maps for display, not measures of the image


class ContractError(LeukedgeError, ValueError):
    """A model file has no valid leukedge contract; the message says what is missing."""


def leukedge_version() -> str:
    try:
        from importlib.metadata import version

        return version("leukedge")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


def class_name_problems(classes: Any) -> list[str]:
    """Why class names are unusable: a name is printed (a newline fakes a row, an ESC drives the
    terminal) and is a folder name (no path separators, ``..``, spaces at either end)."""
    out = []
    for i, name in enumerate(classes):
        if bad := sorted({f"U+{ord(ch):04X}" for ch in name if not ch.isprintable()}):
            out.append(f"class {i} name {name!r} contains control or invisible characters "
                       f"({', '.join(bad)})")
        elif "/" in name or "\\" in name or name.strip(". ") == "" or name != name.strip():
            out.append(f"class {i} name {name!r} cannot be a folder name (a path separator, "
                       "only dots, or spaces at either end)")
    return out


@dataclass(frozen=True)
class ModelContract:
    """The versioned contract carried by every leukedge ONNX model.

    Example:
        >>> contract = read_contract("model.onnx")
        >>> contract.classes, contract.preprocessing.input_size
        (('Benign', 'Early', 'Pre', 'Pro'), (224, 224))
    """

    classes: tuple[str, ...]
    preprocessing: PreprocessSpec
    outputs: tuple[str, ...] = (OUTPUT_NAME, *QUALITY_OUTPUTS, "stain_mask")
    precision: str = "fp32"
    backbone: str = "unknown"
    model_info: dict = field(default_factory=dict)
    leukedge_version: str = field(default_factory=leukedge_version)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))
    provenance: dict = field(default_factory=dict)
    quantization: Optional[dict] = None
    metrics: Optional[dict] = None
    review_below: float = DEFAULT_REVIEW_BELOW
    temperature: float = 1.0
    calibration: dict = field(default_factory=dict)
    input_checks: InputChecks = field(default_factory=InputChecks)
    weights: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def has_ood_score(self) -> bool:
        return "ood_score" in self.outputs

    def with_updates(self, **changes: Any) -> "ModelContract":
        """A copy with some fields changed (e.g. a quantized child of an FP32 model)."""
        return replace(self, **changes)

    def validate(self) -> None:
        problems = []
        classes = self.classes
        if (isinstance(classes, str) or len(classes) < 2 or len(set(classes)) != len(classes)
                or not all(isinstance(c, str) and c for c in classes)):
            problems.append(f"classes must be a list of >= 2 unique names, got {classes!r}")
        else:
            problems += class_name_problems(classes)
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {PRECISIONS}")
        unknown = [o for o in self.outputs if o not in OUTPUT_MEANINGS]
        if OUTPUT_NAME not in self.outputs or unknown:
            problems.append(f"outputs must include {OUTPUT_NAME!r} and only known names "
                            f"({', '.join(OUTPUT_MEANINGS)}); got {list(self.outputs)}")
        problems += finite_problem(self.review_below, "review_below", 0.0, 1.0)
        problems += finite_problem(self.temperature, "temperature", 1e-6)
        problems += self.input_checks.problems()
        if problems:
            raise ContractError("Invalid leukedge contract: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return {
            "schema": CONTRACT_KEY,
            "schema_version": SCHEMA_VERSION,
            "classes": list(self.classes),
            "inputs": [{"name": INPUT_NAME, "dtype": "uint8", "shape": [None, None, None, 3],
                        "layout": "NHWC", "channel_order": "RGB",
                        "note": "raw pixels of any size; one size per batch"}],
            "outputs": [{"name": o, "meaning": OUTPUT_MEANINGS[o]} for o in self.outputs],
            "preprocessing": self.preprocessing.to_dict(),
            "precision": self.precision,
            "backbone": self.backbone,
            "model": dict(self.model_info),
            "weights": dict(self.weights),
            "leukedge_version": self.leukedge_version,
            "created": self.created,
            "provenance": dict(self.provenance),
            "quantization": self.quantization,
            "metrics": self.metrics,
            "review_below": self.review_below,
            "temperature": self.temperature,
            "calibration": dict(self.calibration),
            "input_checks": self.input_checks.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model") -> "ModelContract":
        version = d.get("schema_version")
        if version == 1:
            raise ContractError(
                f"{source}: made by leukedge 0.1 (contract schema 1): it takes preprocessed "
                "float input, which this leukedge no longer computes outside the model. Use a "
                "current model (`leukedge models` lists the bundled ones) or retrain and "
                "re-export with this version.")
        required = ("schema_version", "classes", "outputs", "preprocessing", "precision")
        missing = [k for k in required if k not in d]
        if missing:
            raise ContractError(f"{source}: leukedge contract is missing {', '.join(missing)}")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ContractError(
                f"{source}: contract schema_version {version!r} is not one this leukedge "
                f"understands ({SCHEMA_VERSION}); upgrade leukedge")
        try:
            return cls(
                classes=tuple(d["classes"]) if not isinstance(d["classes"], str) else d["classes"],
                preprocessing=PreprocessSpec.from_dict(d["preprocessing"]),
                outputs=tuple(o["name"] for o in d["outputs"]),
                precision=d["precision"], backbone=d.get("backbone", "unknown"),
                model_info=d.get("model") or {}, weights=d.get("weights") or {},
                leukedge_version=d.get("leukedge_version", "unknown"),
                created=d.get("created", ""), provenance=d.get("provenance") or {},
                quantization=d.get("quantization"), metrics=d.get("metrics"),
                review_below=d.get("review_below", DEFAULT_REVIEW_BELOW),
                temperature=d.get("temperature", 1.0),
                calibration=d.get("calibration") or {},
                input_checks=InputChecks(**(d.get("input_checks") or d.get("sanity") or {})))
        except ContractError as e:
            raise ContractError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ContractError(f"{source}: malformed leukedge contract "
                                f"({type(e).__name__}: {e})") from e

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelContract":
        return cls.from_dict(_parse(text, source), source)


def _parse(text: str, source: str) -> dict:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ContractError(f"{source}: leukedge contract is not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise ContractError(f"{source}: leukedge contract is not a JSON object")
    return d


# --------------------------------------------------------------------------- reading


def _metadata_text(metadata: dict, source: str) -> str:
    if CONTRACT_KEY not in metadata:
        keys = ", ".join(sorted(metadata)) or "none"
        raise ContractError(
            f"{source}: not a leukedge model: its ONNX metadata has no '{CONTRACT_KEY}' entry "
            f"(metadata keys found: {keys}). Export it with `leukedge export`, which writes the "
            "contract (classes, preprocessing, calibration, precision).")
    return metadata[CONTRACT_KEY]


def contract_from_metadata(metadata: dict, source: str = "model") -> ModelContract:
    """Contract from a ``metadata_props`` / ``custom_metadata_map`` mapping."""
    return ModelContract.from_json(_metadata_text(metadata, source), source)


def contract_document(path: str | os.PathLike) -> dict:
    """The contract of an ONNX file as plain JSON, of any schema version (for display).

    Raises:
        ContractError: no such file, not an ONNX model, or no contract in it.
    """
    from .session import RuntimeSetupError, open_for_metadata

    try:
        metadata = open_for_metadata(path).get_modelmeta().custom_metadata_map
    except FileNotFoundError:
        raise ContractError(f"{path}: model file not found") from None
    except RuntimeSetupError as e:
        raise ContractError(str(e)) from e
    return _parse(_metadata_text(metadata, str(path)), str(path))


def read_contract(path: str | os.PathLike) -> ModelContract:
    """Read and validate the contract of an ONNX file (through onnxruntime; no onnx needed)."""
    return ModelContract.from_dict(contract_document(path), str(path))


# --------------------------------------------------------------------------- writing


def embed_contract(model_proto: Any, contract: ModelContract) -> Any:
    """Write the contract into an ``onnx.ModelProto``'s metadata_props (in place; returns it).

    Also checks that the graph has the one uint8 input and every output the contract names.
    """
    graph_inputs = [i.name for i in model_proto.graph.input]
    graph_outputs = {o.name for o in model_proto.graph.output}
    if graph_inputs != [INPUT_NAME]:
        raise ContractError(f"the graph's inputs are {graph_inputs}; a leukedge model has one "
                            f"input {INPUT_NAME!r}")
    missing = [o for o in contract.outputs if o not in graph_outputs]
    if missing:
        raise ContractError(f"contract outputs {missing} are not graph outputs "
                            f"{sorted(graph_outputs)}")
    kept = [p for p in model_proto.metadata_props if p.key != CONTRACT_KEY]
    del model_proto.metadata_props[:]
    for p in kept:
        model_proto.metadata_props.add(key=p.key, value=p.value)
    model_proto.metadata_props.add(key=CONTRACT_KEY, value=contract.to_json())
    return model_proto


def contract_of_proto(model_proto: Any, source: str = "model") -> ModelContract:
    """Read the contract from an in-memory ``onnx.ModelProto``."""
    meta = {p.key: p.value for p in model_proto.metadata_props}
    return contract_from_metadata(meta, source)


def save_model(model_proto: Any, path: str | os.PathLike) -> None:
    """Serialize an ONNX ModelProto atomically (no onnx import needed)."""
    atomic_write_bytes(path, model_proto.SerializeToString())
