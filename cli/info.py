"""`leukedge info`: a model's contract as a readable report (no TensorFlow, no onnx).

Shows any leukedge model, also one this version cannot run (a schema-1 model of leukedge 0.1,
or a file whose graph does not match its contract), and says so; the exit code tells whether
`leukedge infer` would accept it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .errors import EXIT_OK, EXIT_USAGE, reported
from .options import TableOrJson

EPILOG = ("Exit codes: 0 = a model this leukedge can run; 2 = not a readable leukedge model, or "
          "one it cannot run (the report says why).")


def register(app: typer.Typer) -> None:
    """Adds `leukedge info` to the app."""
    app.command("info", epilog=EPILOG, short_help="Show a model's contract.")(info)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items() if v not in (None, {}, []))
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _per_channel(values: Any) -> str:
    """One number when every channel has it, else "(r, g, b)"."""
    if isinstance(values, (list, tuple)) and values and len(set(values)) == 1:
        return _fmt(values[0])
    return f"({_fmt(values)})" if isinstance(values, (list, tuple)) else _fmt(values)


def _pre_lines(pre: dict) -> list[tuple[str, str]]:
    h, w = pre["input_size"]
    mask = pre.get("hsv_mask", {})
    lines = [("input", f"image: uint8 [N, H, W, 3] {pre.get('input_channel_order', 'RGB')}, any "
                       f"size; resized inside the model to {h}x{w} ({pre.get('resize', '?')})"),
             ("normalisation", f"(x - {_per_channel(pre.get('mean'))}) / "
                               f"{_per_channel(pre.get('std'))} on 0-255, "
                               f"{pre.get('network_channel_order', 'RGB')} order")]
    if mask:
        use = "network input" if pre.get("masked_input") else "reported, not a network input"
        lines.append(("stain mask", f"{mask['h_min']:g} <= H <= {mask['h_max']:g}, S >= "
                                    f"{mask['s_min']:g}, V >= {mask['v_min']:g} on [0, 1] ({use})"))
    return lines


def _metrics_line(m: Optional[dict]) -> str:
    if not m:
        return "-"
    sd = f" +- {m['accuracy_sd']:.2%}" if "accuracy_sd" in m else ""
    parts = [f"accuracy {m['accuracy']:.2%}{sd}" if "accuracy" in m else "",
             f"cost/image {m['cost_per_sample']:.3f}" if "cost_per_sample" in m else "",
             f"macro F1 {m['macro_f1']:.4f}" if "macro_f1" in m else "",
             f"n={m['n']}" if "n" in m else ""]
    return ", ".join(p for p in parts if p) or "-"


def _review_line(c: dict) -> str:
    s = c.get("input_checks") or c.get("sanity") or {}  # "sanity": schema 2
    checks = [f"contrast >= {s['min_contrast']:g}" if s.get("min_contrast") else "",
              f"stain coverage >= {s['min_stain_coverage']:g}" if s.get("min_stain_coverage") else "",
              f"ood score <= {s['max_ood_score']:g}" if s.get("max_ood_score") else ""]
    checks = [x for x in checks if x]
    return (f"confidence below {c.get('review_below', 0):g}; input checks: "
            f"{', '.join(checks) if checks else 'none'}")


def report_rows(path: Path, size: int, digest: str, c: dict, usable: Optional[str]
                ) -> list[tuple[str, list[tuple[str, str]]]]:
    """(section, [(key, value)]) of the readable report."""
    version = c.get("schema_version")
    model = [("file", str(path)), ("size", f"{size / 1e6:.1f} MB"), ("sha256", digest),
             ("precision", str(c.get("precision"))), ("backbone", str(c.get("backbone"))),
             ("made by", f"leukedge {c.get('leukedge_version', '?')}, {c.get('created') or '?'}, "
                         f"contract schema {version}"),
             ("usable here", "yes" if usable is None else f"no: {usable}")]
    sections = [("Model", model), ("Classes", [("classes", ", ".join(c.get("classes", [])))])]
    if version == 1:
        return sections
    calibration = c.get("calibration") or {}
    members = (c.get("model") or {}).get("members") or []  # an ensemble (leukedge ensemble)
    sections += [
        ("Preprocessing (inside the model)" if not members else
         "Preprocessing of the first member (each has its own: Members)",
         _pre_lines(c["preprocessing"])),
        ("Outputs", [(o["name"], o.get("meaning", "")) for o in c.get("outputs", [])]),
        ("Review", [("flagged when", _review_line(c)),
                    ("temperature", f"{c.get('temperature', 1.0):.4g} (ECE "
                                    f"{_fmt(calibration.get('ece_before'))} -> "
                                    f"{_fmt(calibration.get('ece_after'))}, fitted on "
                                    f"{calibration.get('fitted_on', '?')})")]),
        ("Metrics", [("measured on", str((c.get("provenance") or {}).get("metrics_source")
                                         or "test split")),
                     ("result", _metrics_line(c.get("metrics")))]),
        ("Weights", [("initial", _fmt(c.get("weights") or {}) or "-")]),
        ("Provenance", [(k, _fmt(v)) for k, v in (c.get("provenance") or {}).items()
                        if k in ("data_manifest_sha256", "split_manifest_sha256", "seed",
                                 "run_id", "keras_sha256", "parent_sha256", "parent_precision",
                                 "site_files_sha256", "site_images")]),
    ]
    if members:
        sections.append(("Members (probabilities averaged)", [
            (f"{m.get('weight', 0):.3f} x", f"{m.get('file')} ({m.get('backbone')}, "
                                           f"{m.get('precision')}, {_size(m.get('input_size'))}, "
                                           f"sha256 {str(m.get('sha256'))[:12]})")
            for m in members]))
    if c.get("quantization"):
        q = c["quantization"]
        keys = ("method", "weight_type", "per_channel", "reduce_range", "calib_size",
                "checks_passed", "scope")
        sections.append(("Quantization", [(k, _fmt(q[k])) for k in keys if k in q]))
    return sections


def _size(size) -> str:
    return "x".join(str(v) for v in size) if isinstance(size, list) else "?"


def _wrapped(head: str, value: str, columns: int = 80) -> str:
    """``head`` + ``value``, wrapped at ``columns`` with the continuation under the value (a
    hash or a path longer than a line stays whole)."""
    import textwrap

    lines = textwrap.wrap(value, width=max(columns - len(head), 30), break_long_words=False,
                          break_on_hyphens=False) or [""]
    return "\n".join([head + lines[0]] + [" " * len(head) + line for line in lines[1:]])


def _usable(path: Path) -> Optional[str]:
    """None when `leukedge infer` would accept the model, else why not."""
    from leukedge.runtime.classifier import Classifier
    from leukedge.runtime.errors import LeukedgeError

    try:
        Classifier(path, provider="cpu", threads=1)
    except (LeukedgeError, ValueError) as e:
        return str(e).replace(f"{path}: ", "")
    return None


def info(
    model: Annotated[Optional[str], typer.Argument(
        show_default=False, help="An ONNX file, or a bundled model's name. Default: the bundled "
                                 "'default' model.")] = None,
    fmt: Annotated[TableOrJson, typer.Option(
        "--format", "-f", help="table (a readable report) or json.")] = TableOrJson.table,
) -> None:
    """Show a model's contract: classes, preprocessing, review rules, metrics, provenance."""
    from leukedge.runtime.contract import contract_document
    from leukedge.runtime.files import sha256_file
    from leukedge.runtime.models import resolve_model

    with reported():
        path = resolve_model(model)
        document = contract_document(path)
    usable = _usable(path)
    size, digest = path.stat().st_size, sha256_file(path)
    if fmt is TableOrJson.json:
        typer.echo(json.dumps({"path": str(path), "size_bytes": size, "sha256": digest,
                               "usable": usable is None, "problem": usable,
                               "contract": document}, indent=2, ensure_ascii=False))
    else:
        for title, rows in report_rows(path, size, digest, document, usable):
            if not rows:
                continue
            typer.echo(title)
            width = max((len(k) for k, _ in rows), default=0)
            for key, value in rows:
                typer.echo(_wrapped(f"  {key:<{width}}  ", value))
    raise typer.Exit(EXIT_OK if usable is None else EXIT_USAGE)
