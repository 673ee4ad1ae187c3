"""Choices of the `leukedge` commands, taken from the registries that own them, and the
options several commands share. Standard library and Typer only (no heavy imports)."""

from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"
    csv = "csv"


class TableOrJson(str, enum.Enum):
    table = "table"
    json = "json"


class Provider(str, enum.Enum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


# Options of the commands that run a model on images (watch, serve).
ModelOption = Annotated[Optional[str], typer.Option(
    "--model", "-m", show_default=False, help="Bundled model name or ONNX file.")]
ProviderOption = Annotated[Provider, typer.Option(help="auto, cuda or cpu.")]
ThreadsOption = Annotated[Optional[int], typer.Option(show_default=False,
                                                      help="ONNX Runtime threads.")]
ReviewBelowOption = Annotated[Optional[float], typer.Option(
    min=0.0, max=1.0, show_default=False, help="Review threshold (default: the model's).")]


class ReportFormat(str, enum.Enum):
    table = "table"
    markdown = "markdown"
    json = "json"
    csv = "csv"


def registry_enum(name: str, values) -> type[enum.Enum]:
    """A str Enum whose members are a registry's names (so --help lists them)."""
    return enum.Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


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
