"""Choices of the `leukedge` commands, taken from the registries that own them, and the
options several commands share. Standard library, Typer and the session door's choices
(no heavy imports)."""

from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer

# the session door's own choices (it imports only the standard library when loaded)
from leukedge.runtime.session import PROVIDER_CHOICES


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


class TableOrJson(str, enum.Enum):
    table = "table"
    json = "json"


def registry_enum(name: str, values) -> type[enum.Enum]:
    """A str Enum whose members are a registry's names (so --help lists them)."""
    return enum.Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Provider = registry_enum("Provider", PROVIDER_CHOICES)
PROVIDER_HELP = ("auto: CUDA when onnxruntime-gpu has a working GPU, else CPU; cuda: fail "
                 "without it; cpu; openvino:CPU|GPU|NPU (openvino = openvino:CPU; needs "
                 "leukedge[openvino]): fail unless OpenVINO runs the model on that device.")

# Options of the commands that run a model on images (watch, serve).
ModelOption = Annotated[Optional[str], typer.Option(
    "--model", "-m", show_default=False,
    help="Bundled model name, ONNX file, or run folder (the file of it this CPU runs "
         "exactly).")]
ProviderOption = Annotated[Provider, typer.Option(case_sensitive=False, help=PROVIDER_HELP)]
ThreadsOption = Annotated[Optional[int], typer.Option(show_default=False,
                                                      help="ONNX Runtime threads.")]
ReviewBelowOption = Annotated[Optional[float], typer.Option(
    min=0.0, max=1.0, show_default=False, help="Review threshold (default: the model's).")]


class ReportFormat(str, enum.Enum):
    table = "table"
    markdown = "markdown"
    json = "json"
    csv = "csv"


def backbone_choices() -> type[enum.Enum]:
    from leukedge.modelkit.backbones import backbone_names  # no TensorFlow at import

    return registry_enum("Backbone", backbone_names())


def parse_weights(text: Optional[str]) -> Optional[list[float]]:
    """``--weights 2,1`` -> [2.0, 1.0]; None -> None (equal weights). ValueError names the
    flag."""
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"--weights {text!r}: numbers separated by commas, e.g. 2,1") from None
