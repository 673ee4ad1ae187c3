"""Rewrite the contract of leukedge ONNX files to the current schema, leaving the graph as it is.

Schema 3 (leukedge 0.3) renamed the input checks' limits from ``sanity`` to ``input_checks``;
nothing a model computes changed. This script re-embeds the contract of each file (default: the
bundled models, whose SHA256SUMS it then rewrites) and records the file it came from (``provenance.contract_upgrade``: schema and
sha256 before), so the provenance chain stays whole. Probabilities are checked to be identical
before and after.

    python bench/upgrade_contracts.py                    # the bundled models
    python bench/upgrade_contracts.py model.onnx ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

from leukedge.runtime.classifier import Classifier
from leukedge.runtime.contract import (SCHEMA_VERSION, contract_document, contract_of_proto,
                                       embed_contract, save_model)
from leukedge.runtime.files import atomic_write_text, sha256_file
from leukedge.runtime.models import MODELS_DIR, SAMPLES_DIR


def upgrade(path: Path) -> bool:
    """Re-embed ``path``'s contract at the current schema; False when it is current already."""
    before = contract_document(path)
    if before.get("schema_version") == SCHEMA_VERSION:
        return False
    samples = sorted(SAMPLES_DIR.glob("*/*.jpg"))
    old_probs = [p.probabilities for p in Classifier(path, provider="cpu").predict_pixels(
        [_load(s) for s in samples])]
    proto = onnx.load(str(path))
    contract = contract_of_proto(proto, str(path))
    provenance = {**contract.provenance, "contract_upgrade": {
        "from_schema": before.get("schema_version"), "from_sha256": sha256_file(path)}}
    save_model(embed_contract(proto, contract.with_updates(provenance=provenance)), path)
    new_probs = [p.probabilities for p in Classifier(path, provider="cpu").predict_pixels(
        [_load(s) for s in samples])]
    if new_probs != old_probs:
        raise SystemExit(f"{path}: probabilities changed; the graph must not")
    return True


def _load(path: Path) -> np.ndarray:
    from leukedge.runtime.decode import read_image

    return read_image(path)


def write_sha256sums(folder: Path = MODELS_DIR) -> Path:
    """Record the bundled models' sha256 (``sha256sum`` format), which `leukedge doctor`
    checks the installed files against."""
    lines = [f"{sha256_file(p)}  {p.name}" for p in sorted(folder.glob("*.onnx"))]
    path = folder / "SHA256SUMS"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted(MODELS_DIR.glob("*.onnx"))
    for path in paths:
        print(f"{path}: {'upgraded' if upgrade(path) else 'current'} "
              f"(schema {SCHEMA_VERSION}, sha256 {sha256_file(path)[:12]})")
    if not argv:
        print(f"Wrote {write_sha256sums()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
