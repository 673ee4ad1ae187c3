"""Arrival -> row latency and sustained throughput of `leukedge watch`, as a scanner feeds it.

Starts the real `leukedge watch INBOX --output rows.jsonl` process, waits until it has
classified a warm-up image, then drops real smear images into INBOX the way a scanner does
(written under a ``.part`` name, then renamed), at a fixed rate (``--rate``, images/s) or all
at once (``--rate 0``). A row's latency is the time from the rename to the moment its line is
in the output file (the file is polled every 5 ms). Reports p50/p95/max latency and the
sustained rate (images / (last row - first arrival)), with the settle time used, the model and
the machine.

Usage:
    python bench/bench_watch.py --images ../shared/data/ALL/Original --n 200 --rate 10
    python bench/bench_watch.py --images ../shared/data/ALL/Original --n 300 --rate 0 \
        --settle 0.2 --json docs/results/bench_watch.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from leukedge.modelkit.evaluation.machine import describe_machine
from results_file import command_line, report

LEUKEDGE = str(Path(sys.executable).with_name("leukedge"))


def pick(root: Path, n: int) -> tuple[Path, list[Path]]:
    """(a warm-up image, ``n`` images spread over the folder), all different files. The warm-up
    must not share its bytes with a measured image: watch keys a row by the bytes classified,
    so a copy of a classified image gets no second row."""
    files = sorted(p for p in root.rglob("*.jpg"))
    step = max(1, len(files) // (n + 1))
    chosen = files[::step][:n + 1]
    return chosen[-1], chosen[:n]


def rows_in(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written
    return out


def run(warmup: Path, images: list[Path], rate: float, settle: float, model: str, batch: int,
        timeout: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench_watch_"))
    inbox, output = work / "inbox", work / "rows.jsonl"
    inbox.mkdir()
    shutil.copy(warmup, inbox / "warmup.jpg")
    cmd = [LEUKEDGE, "watch", str(inbox), "--output", str(output), "--settle", str(settle),
           "--model", model, "--batch-size", str(batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not rows_in(output):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"watch did not start: {proc.stderr.read().decode()[-800:]}")
            time.sleep(0.05)
        arrivals: dict[str, float] = {}
        seen: dict[str, float] = {}
        gap = 1.0 / rate if rate > 0 else 0.0
        start = time.monotonic()
        pending = list(enumerate(images))
        deadline = start + timeout
        while len(seen) < len(images) and time.monotonic() < deadline:
            now = time.monotonic()
            while pending and now >= start + pending[0][0] * gap:
                i, src = pending.pop(0)
                name = f"img{i:05d}.jpg"
                part = inbox / f"{name}.part"
                shutil.copyfile(src, part)
                os.replace(part, inbox / name)
                arrivals[name] = time.monotonic()
                now = time.monotonic()
            for row in rows_in(output):
                name = Path(row["path"]).name
                if name in arrivals and name not in seen:
                    seen[name] = time.monotonic()
            time.sleep(0.005)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    latency = np.array([seen[n] - arrivals[n] for n in seen])
    errors = sum(1 for r in rows_in(output) if r.get("error"))
    shutil.rmtree(work, ignore_errors=True)
    if not len(latency):
        raise RuntimeError("no row arrived")
    span = max(seen.values()) - min(arrivals.values())
    return {"images": len(images), "rows": len(seen), "error_rows": errors,
            "arrival_rate": rate or "all at once", "settle_s": settle, "batch_size": batch,
            "latency_s": {"p50": round(float(np.percentile(latency, 50)), 3),
                          "p95": round(float(np.percentile(latency, 95)), 3),
                          "max": round(float(latency.max()), 3)},
            "sustained_images_per_s": round(len(seen) / span, 1), "exit_code": proc.returncode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=Path("../shared/data/ALL/Original"))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="images/s; 0 = all at once")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="append the result here")
    args = parser.parse_args(argv)
    result = {"command": command_line(),
              "model": args.model,
              **run(*pick(args.images, args.n), args.rate, args.settle, args.model,
                    args.batch_size, args.timeout),
              "machine": describe_machine()}
    report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
