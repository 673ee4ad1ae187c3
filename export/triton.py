"""A Triton Inference Server model repository for a leukedge model.

How a vendor who outgrows one PC serves a model: Triton's ONNX Runtime backend, dynamic
batching, the class labels beside the model. The one-file model needs nothing else: it takes
the decoded uint8 RGB pixels (one size per batch; Triton batches only requests of the same
size together) and returns calibrated probabilities and the input measures.

Layout written::

    DIR/<name>/config.pbtxt
    DIR/<name>/labels.txt
    DIR/<name>/1/model.onnx
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from leukedge.runtime.contract import INPUT_NAME, read_contract
from leukedge.runtime.files import atomic_write_text

MAX_BATCH = 64
QUEUE_DELAY_US = 2000
_TYPES = {"probs": "TYPE_FP32", "ood_score": "TYPE_FP32", "stain_fraction": "TYPE_FP32",
          "stain_coverage": "TYPE_FP32", "contrast": "TYPE_FP32", "stain_mask": "TYPE_UINT8"}


def _output_block(name: str, classes: int, mask_size: tuple[int, int]) -> str:
    if name == "probs":
        return (f'  {{\n    name: "probs"\n    data_type: TYPE_FP32\n    dims: [ {classes} ]\n'
                f'    label_filename: "labels.txt"\n  }}')
    if name == "stain_mask":
        h, w = mask_size
        return f'  {{\n    name: "stain_mask"\n    data_type: TYPE_UINT8\n    dims: [ {h}, {w} ]\n  }}'
    if name == "heatmap":  # the network's last feature resolution
        return '  {\n    name: "heatmap"\n    data_type: TYPE_FP32\n    dims: [ -1, -1 ]\n  }'
    return (f'  {{\n    name: "{name}"\n    data_type: {_TYPES[name]}\n    dims: [ 1 ]\n'
            f'    reshape: {{ shape: [ ] }}\n  }}')


def triton_config(name: str, contract, max_batch: int = MAX_BATCH) -> str:
    """The ``config.pbtxt`` text of a model with this contract."""
    outputs = ",\n".join(_output_block(o, len(contract.classes),
                                       contract.preprocessing.input_size)
                         for o in contract.outputs)
    return (f'name: "{name}"\n'
            'platform: "onnxruntime_onnx"\n'
            f"max_batch_size: {max_batch}\n"
            "input [\n"
            f'  {{\n    name: "{INPUT_NAME}"\n    data_type: TYPE_UINT8\n    format: FORMAT_NHWC\n'
            "    dims: [ -1, -1, 3 ]\n  }\n"
            "]\n"
            f"output [\n{outputs}\n]\n"
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {QUEUE_DELAY_US}\n}}\n"
            "instance_group [ { kind: KIND_CPU, count: 1 } ]\n"
            f'parameters {{ key: "leukedge_review_below" value: {{ string_value: '
            f'"{contract.review_below:g}" }} }}\n')


def model_name(path: str | os.PathLike) -> str:
    """A Triton model name from a file name: letters, digits, '-', '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem).strip("_") or "leukedge"


def write_triton_repository(model_path: str | os.PathLike, repository: str | os.PathLike,
                            name: Optional[str] = None, max_batch: int = MAX_BATCH) -> Path:
    """Write (or replace) ``repository/<name>/`` for the model; returns that folder.

    The model folder is assembled beside its final place and swapped in, so a Triton server
    polling the repository never sees half a model.

    Raises:
        ContractError: the file is not a current leukedge model.
    """
    contract = read_contract(model_path)
    name = name or model_name(model_path)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"Triton model name {name!r}: use letters, digits, '-' and '_'")
    root = Path(repository)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        (staging / "1").mkdir()
        shutil.copyfile(model_path, staging / "1" / "model.onnx")
        atomic_write_text(staging / "labels.txt", "\n".join(contract.classes) + "\n")
        atomic_write_text(staging / "config.pbtxt", triton_config(name, contract, max_batch))
        os.chmod(staging, 0o755)
        final = root / name
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=root))
            os.replace(final, old / name)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / name
