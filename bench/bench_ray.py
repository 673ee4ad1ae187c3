"""`leukedge infer --ray local` against plain `leukedge infer` on the same folder, as a user
runs them: whole processes (Ray's start included), and the rate each reports itself (from the
first model run to the last row, without start-up). The rows of both runs are compared (all
but `seconds` and `timestamp`, which are measured per run).

Usage (the `leukedge` next to this Python, with the [ray] extra):
    python bench/bench_ray.py --images ../shared/data/ALL/Original --n 650 \
        --json docs/results/bench_ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Optional

from bench_infer import LEUKEDGE, pick_images, run_timed
from leukedge.modelkit.evaluation.machine import describe_machine
from results_file import report

ROOT = Path(__file__).resolve().parents[1]
VARYING = ("seconds", "timestamp")
MIN_BURSTS = 10  # distinct row times (10 ms) a steady rate needs


def rows(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VARYING}
            for line in path.read_text().splitlines() if line.strip()]


def steady_rate(path: Path) -> Optional[float]:
    """Rows per second from the 10th to the 90th percentile row written (their timestamps):
    the rate once a run is going, without its start-up and its last batches. Rows come in
    bursts (a batch, or a Ray call of several batches), so the window spans many bursts only
    on a few thousand images."""
    stamps = [datetime.fromisoformat(json.loads(line)["timestamp"])
              for line in path.read_text().splitlines() if line.strip()]
    first, last = len(stamps) // 10, len(stamps) * 9 // 10
    bursts = len({round(t.timestamp(), 2) for t in stamps[first:last + 1]})
    if bursts < MIN_BURSTS:  # a handful of bursts: the rate would be one burst's size / 0
        return None
    return round((last - first) / (stamps[last] - stamps[first]).total_seconds(), 1)


def measure(commands: dict[str, list[str]], outputs: dict[str, Path], repeats: int) -> dict:
    """Each command ``repeats`` times, taking turns, so that both see the same load."""
    runs = {mode: {"wall_s": [], "reported_images_per_s": [], "steady_images_per_s": [],
                   "load_1min": []} for mode in commands}
    for _ in range(repeats):
        for mode, cmd in commands.items():
            runs[mode]["load_1min"].append(round(os.getloadavg()[0], 1))
            wall, max_rss, err = run_timed(cmd)
            found = re.search(r"\((\d+) images/s\)", err)
            runs[mode]["wall_s"].append(round(wall, 2))
            runs[mode]["reported_images_per_s"].append(int(found.group(1)) if found else None)
            runs[mode]["steady_images_per_s"].append(steady_rate(outputs[mode]))
            runs[mode]["driver_max_rss_mib"] = max(max_rss, runs[mode].get("driver_max_rss_mib", 0))
    for run in runs.values():
        run["wall_s_median"] = statistics.median(run["wall_s"])
        steady = [r for r in run["steady_images_per_s"] if r is not None]
        run["steady_images_per_s_median"] = statistics.median(steady) if steady else None
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=Path, default=ROOT.parent / "shared/data/ALL/Original")
    ap.add_argument("--n", type=int, default=650)
    ap.add_argument("--model", default="default")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="append the results to this JSON list")
    ap.add_argument("--note", help="what else the machine was doing, recorded with the run")
    args = ap.parse_args()

    images = pick_images(args.images, args.n)
    result = {"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
              "machine": describe_machine(), "model": args.model, "images": len(images)}
    if args.note:
        result["note"] = args.note
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, p in enumerate(images):
            shutil.copyfile(p, folder / f"{i:04d}_{p.name}")
        out = {mode: Path(tmp) / f"{mode}.jsonl" for mode in ("plain", "ray")}
        base = [LEUKEDGE, "infer", str(folder), "-m", args.model, "-f", "json"]
        runs = measure({"plain": base + ["-o", str(out["plain"])],
                        "ray": base + ["--ray", "local", "-o", str(out["ray"])]}, out,
                       args.repeats)
        plain, ray = rows(out["plain"]), rows(out["ray"])
    for mode, run in runs.items():
        run["images_per_s_whole_process"] = round(len(images) / run["wall_s_median"], 1)
    result.update(runs)
    result["identical_rows"] = plain == ray
    result["rows"] = len(ray)
    result["ray_vs_plain_whole_process"] = round(
        runs["ray"]["images_per_s_whole_process"] / runs["plain"]["images_per_s_whole_process"], 3)
    rates = [runs[mode]["steady_images_per_s_median"] for mode in ("ray", "plain")]
    result["ray_vs_plain_steady"] = round(rates[0] / rates[1], 3) if all(rates) else None
    report(result, args.json)


if __name__ == "__main__":
    main()
