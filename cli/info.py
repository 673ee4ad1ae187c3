"""`leukedge info`: show a model's leukedge contract, file size and sha256 (no TensorFlow, no onnx)."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer

from .errors import fail

EXIT_USAGE = 2


class InfoFormat(str, enum.Enum):
    table = "table"
    json = "json"


def register(app: typer.Typer) -> None:
    """Adds `leukedge info` to the app."""
    app.command("info", epilog="Exit codes: 0 = shown; 2 = not a readable leukedge model.")(info)


def _compact(value) -> str:
    if value in (None, {}, []):
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact(v) if isinstance(v, (dict, list)) else v}"
                         for k, v in value.items())
    return json.dumps(value, ensure_ascii=False)


def _inputs_text(inputs: list) -> str:
    parts = []
    for spec in inputs:
        shape = ",".join("N" if d is None else str(d) for d in spec["shape"])
        parts.append(f"{spec['name']} [{shape}] {spec['dtype']} {spec['layout']} ({spec['content']})")
    return "; ".join(parts)


def _preprocessing_text(pre: dict) -> tuple[str, str]:
    h, w = pre["input_size"]
    pixels = (f"{h}x{w} {pre.get('channel_order', 'RGB')} {pre.get('layout', 'NHWC')}, "
              f"x * {pre['scale']:.6g} + {pre.get('offset', 0):g}; resize: {pre.get('resize', '?')}")
    m = pre["hsv_mask"]
    mask = (f"{m['h_min']:g} <= H <= {m['h_max']:g}, S >= {m['s_min']:g}, V >= {m['v_min']:g} "
            f"(HSV on [0, 1], tolerance {m.get('tolerance', 0):g})")
    return pixels, mask


def _table(path: Path, size: int, digest: str, c: dict) -> list[tuple[str, str]]:
    pixels, mask = _preprocessing_text(c["preprocessing"])
    return [
        ("file", str(path)),
        ("size", f"{size / 1e6:.1f} MB ({size:,} bytes)"),
        ("sha256", digest),
        ("schema", f"{c.get('schema', '?')} v{c['schema_version']}"),
        ("classes", ", ".join(c["classes"])),
        ("precision", c["precision"]),
        ("backbone", c.get("backbone", "unknown")),
        ("inputs", _inputs_text(c["inputs"])),
        ("output", f"{c['output']['name']} ({c['output'].get('kind', '')})"),
        ("preprocessing", pixels),
        ("hsv mask", mask),
        ("review below", f"{c.get('review_below', 0.0):g}"),
        ("leukedge", f"{c.get('leukedge_version', '?')} (created {c.get('created') or '?'})"),
        ("model", _compact(c.get("model"))),
        ("provenance", _compact(c.get("provenance"))),
        ("quantization", _compact(c.get("quantization"))),
        ("metrics", _compact(c.get("metrics"))),
    ]


def info(
    model: Annotated[Path, typer.Argument(help="An ONNX model file.", show_default=False)],
    fmt: Annotated[InfoFormat, typer.Option("--format", "-f", help="table or json.")
                   ] = InfoFormat.table,
) -> None:
    """Show a model's leukedge contract, file size and sha256.

    The contract: classes, inputs, preprocessing, HSV mask, precision, provenance, metrics.
    """
    from leukedge.runtime.contract import ContractError, read_contract
    from leukedge.runtime.files import sha256_file
    from leukedge.runtime.session import RuntimeSetupError

    try:
        contract = read_contract(model)
    except (ContractError, RuntimeSetupError) as e:
        fail(str(e), EXIT_USAGE)
    size, digest, as_dict = model.stat().st_size, sha256_file(model), contract.to_dict()
    if fmt is InfoFormat.json:
        typer.echo(json.dumps({"path": str(model), "size_bytes": size, "sha256": digest,
                               "contract": as_dict}, indent=2, ensure_ascii=False))
        return
    rows = _table(model, size, digest, as_dict)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")
