"""Choices of the `leukedge` commands, taken from the registries that own them, and the
options several commands share. Standard library and Typer only (no heavy imports)."""

from __future__ import annotations

import enum


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


class ReportFormat(str, enum.Enum):
    table = "table"
    markdown = "markdown"
    json = "json"
    csv = "csv"


def registry_enum(name: str, values) -> type[enum.Enum]:
    """A str Enum whose members are a registry's names (so --help lists them)."""
    return enum.Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


def backbone_choices() -> type[enum.Enum]:
    from leukedge.train.backbones import backbone_names  # no TensorFlow at import

    return registry_enum("Backbone", backbone_names())
