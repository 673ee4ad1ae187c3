"""The model contract: what a leukedge ONNX file promises about itself.

Every leukedge ONNX file carries one JSON document under the ``metadata_props`` key
:data:`CONTRACT_KEY`: class names in output order, the inputs (names, shapes, layout, dtype, which
one takes the HSV-masked image), the preprocessing (:class:`~leukedge.runtime.preprocess.PreprocessSpec`),
precision, backbone, leukedge version, creation time, provenance hashes and, when known, evaluation
metrics. The runtime configures itself from it; a vendor can read it from any language with any
ONNX reader.

This module is the only one that writes or reads the contract. Reading works through onnxruntime
alone; writing edits an ``onnx.ModelProto`` that the caller (export/) already holds, so this
module itself never imports onnx or TensorFlow.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from .files import atomic_write_bytes, sha256_file  # noqa: F401  (re-exported)
from .preprocess import PreprocessSpec

CONTRACT_KEY = "leukedge.contract"
SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CLASSES = ("Benign", "Early", "Pre", "Pro")


class ContractError(ValueError):
    """A model file has no valid leukedge contract; the message says what is missing."""


def leukedge_version() -> str:
    try:
        from importlib.metadata import version

        return version("leukedge")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


@dataclass(frozen=True)
class TensorSpec:
    """One model input: its ONNX name, shape (None = dynamic), and what it carries."""

    name: str
    shape: tuple[Optional[int], ...]
    content: str  # "image" or "masked_image"
    dtype: str = "float32"
    layout: str = "NHWC"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "content": self.content,
                "dtype": self.dtype, "layout": self.layout}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(name=d["name"], shape=tuple(d["shape"]), content=d["content"],
                   dtype=d.get("dtype", "float32"), layout=d.get("layout", "NHWC"))


INPUT_CONTENTS = ("image", "masked_image")


@dataclass(frozen=True)
class ModelContract:
    """The versioned contract carried by every leukedge ONNX model.

    Example:
        >>> contract = ModelContract.for_hybrid(PreprocessSpec(input_size=(128, 128)),
        ...                                     backbone="small_cnn")
        >>> model_proto = embed_contract(model_proto, contract)   # export side, needs onnx
        >>> read_contract("model.onnx").classes                    # runtime side
        ('Benign', 'Early', 'Pre', 'Pro')
    """

    classes: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    output_name: str
    preprocessing: PreprocessSpec
    precision: str = "fp32"
    backbone: str = "unknown"
    model_info: dict = field(default_factory=dict)  # seg_features, parameters, input size...
    leukedge_version: str = field(default_factory=leukedge_version)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    provenance: dict = field(default_factory=dict)  # data_manifest_sha256, split_manifest_sha256, parent_sha256...
    quantization: Optional[dict] = None  # method, calibration, excluded nodes...
    metrics: Optional[dict] = None  # evaluation metrics when known
    review_below: float = 0.0  # suggested confidence under which a prediction needs review

    def __post_init__(self) -> None:
        self.validate()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def for_hybrid(cls, preprocessing: PreprocessSpec, *, classes=DEFAULT_CLASSES,
                   image_input: str = "image", masked_input: str = "masked_image",
                   output_name: str = "probs", **kwargs: Any) -> "ModelContract":
        """Contract of the standard two-input hybrid (image + HSV-masked image)."""
        h, w = preprocessing.input_size
        inputs = (TensorSpec(image_input, (None, h, w, 3), "image"),
                  TensorSpec(masked_input, (None, h, w, 3), "masked_image"))
        return cls(classes=tuple(classes), inputs=inputs, output_name=output_name,
                   preprocessing=preprocessing, **kwargs)

    def with_updates(self, **changes: Any) -> "ModelContract":
        """A copy with some fields changed (e.g. a quantized child of an FP32 model)."""
        return replace(self, **changes)

    def input_for(self, content: str) -> Optional[TensorSpec]:
        for spec in self.inputs:
            if spec.content == content:
                return spec
        return None

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        problems = []
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            problems.append(f"classes must be >= 2 unique names, got {list(self.classes)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} is not one of {PRECISIONS}")
        contents = [i.content for i in self.inputs]
        if "image" not in contents:
            problems.append("no input carries content 'image'")
        bad = [c for c in contents if c not in INPUT_CONTENTS]
        if bad:
            problems.append(f"unknown input content {bad}; valid: {INPUT_CONTENTS}")
        if not self.output_name:
            problems.append("output_name is empty")
        if not 0.0 <= float(self.review_below) <= 1.0:
            problems.append(f"review_below must be in [0, 1], got {self.review_below}")
        if problems:
            raise ContractError("Invalid leukedge contract: " + "; ".join(problems))

    # -- (de)serialization --------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": CONTRACT_KEY,
            "schema_version": SCHEMA_VERSION,
            "classes": list(self.classes),
            "inputs": [i.to_dict() for i in self.inputs],
            "output": {"name": self.output_name, "kind": "softmax probabilities, classes order"},
            "preprocessing": self.preprocessing.to_dict(),
            "precision": self.precision,
            "backbone": self.backbone,
            "model": dict(self.model_info),
            "leukedge_version": self.leukedge_version,
            "created": self.created,
            "provenance": dict(self.provenance),
            "quantization": self.quantization,
            "metrics": self.metrics,
            "review_below": self.review_below,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=None, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model") -> "ModelContract":
        required = ("schema_version", "classes", "inputs", "output", "preprocessing", "precision")
        missing = [k for k in required if k not in d]
        if missing:
            raise ContractError(f"{source}: leukedge contract is missing {', '.join(missing)}")
        if int(d["schema_version"]) > SCHEMA_VERSION:
            raise ContractError(
                f"{source}: contract schema_version {d['schema_version']} is newer than this "
                f"leukedge understands ({SCHEMA_VERSION}); upgrade leukedge")
        try:
            return cls(
                classes=tuple(d["classes"]),
                inputs=tuple(TensorSpec.from_dict(i) for i in d["inputs"]),
                output_name=d["output"]["name"],
                preprocessing=PreprocessSpec.from_dict(d["preprocessing"]),
                precision=d["precision"],
                backbone=d.get("backbone", "unknown"),
                model_info=d.get("model") or {},
                leukedge_version=d.get("leukedge_version", "unknown"),
                created=d.get("created", ""),
                provenance=d.get("provenance") or {},
                quantization=d.get("quantization"),
                metrics=d.get("metrics"),
                review_below=float(d.get("review_below", 0.0)),
            )
        except ContractError as e:
            raise ContractError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ContractError(f"{source}: malformed leukedge contract ({type(e).__name__}: {e})") from e

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> "ModelContract":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ContractError(f"{source}: leukedge contract is not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise ContractError(f"{source}: leukedge contract is not a JSON object")
        return cls.from_dict(d, source)


# --------------------------------------------------------------------------- reading


def contract_from_metadata(metadata: dict, source: str = "model") -> ModelContract:
    """Contract from a ``metadata_props`` / ``custom_metadata_map`` mapping."""
    if CONTRACT_KEY not in metadata:
        keys = ", ".join(sorted(metadata)) or "none"
        raise ContractError(
            f"{source}: not a leukedge model: its ONNX metadata has no '{CONTRACT_KEY}' entry "
            f"(metadata keys found: {keys}). Export it with `leukedge export`, which writes the "
            "contract (class names, input size, HSV thresholds, precision).")
    return ModelContract.from_json(metadata[CONTRACT_KEY], source)


def read_contract(path: str | os.PathLike) -> ModelContract:
    """Read the contract of an ONNX file through onnxruntime (no onnx package needed)."""
    from .session import load_onnxruntime

    ort = load_onnxruntime()
    path = str(path)
    if not Path(path).is_file():
        raise ContractError(f"{path}: model file not found")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ContractError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0][:300]})") from e
    return contract_from_metadata(sess.get_modelmeta().custom_metadata_map, path)


# --------------------------------------------------------------------------- writing


def embed_contract(model_proto: Any, contract: ModelContract) -> Any:
    """Write the contract into an ``onnx.ModelProto``'s metadata_props (in place; returns it).

    Also checks that the contract's input and output names exist in the graph.
    """
    graph_inputs = {i.name for i in model_proto.graph.input}
    graph_outputs = {o.name for o in model_proto.graph.output}
    missing = [i.name for i in contract.inputs if i.name not in graph_inputs]
    if missing:
        raise ContractError(f"contract inputs {missing} are not graph inputs {sorted(graph_inputs)}")
    if contract.output_name not in graph_outputs:
        raise ContractError(
            f"contract output {contract.output_name!r} is not a graph output {sorted(graph_outputs)}")
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
