"""Where the benchmarks keep their raw outputs: one JSON list per file, a run appended to it,
so a file in docs/results/ keeps every run made for the figures it backs."""

from __future__ import annotations

import json
from pathlib import Path

from leukedge.runtime.files import atomic_write_text


def append_run(path: Path, result: dict) -> None:
    """Append ``result`` to the JSON list in ``path`` (created, with its folder, if missing)."""
    old = json.loads(path.read_text()) if path.is_file() else []
    if not isinstance(old, list):
        raise SystemExit(f"{path}: holds no list of runs; give another --json file")
    atomic_write_text(path, json.dumps(old + [result], indent=1) + "\n")
