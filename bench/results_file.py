"""Where the benchmarks keep their raw outputs: one JSON list per file, a run appended to it,
so a file in docs/results/ keeps every run made for the figures it backs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from leukedge.runtime.files import atomic_write_text


def append_run(path: Path, result: dict) -> None:
    """Append ``result`` to the JSON list in ``path`` (created, with its folder, if missing)."""
    old = json.loads(path.read_text()) if path.is_file() else []
    if not isinstance(old, list):
        raise SystemExit(f"{path}: holds no list of runs; give another --json file")
    atomic_write_text(path, json.dumps(old + [result], indent=1) + "\n")


def command_line() -> str:
    """How this benchmark was run, from the project root: ``python bench/<script> <args>``."""
    return " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def report(result: dict, path: Optional[Path]) -> None:
    """Print ``result`` as JSON and, when ``path`` is given, append it there (:func:`append_run`)."""
    print(json.dumps(result, indent=1))
    if path:
        append_run(path, result)
