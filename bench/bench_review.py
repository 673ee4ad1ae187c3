"""How fast the review page is with a long queue: page + queue JSON load, and a decision's round
trip, against the real `leukedge serve --review` on 127.0.0.1.

Makes ``--rows`` small PNGs (noise with a purple blob, 224x224), classifies them with
`leukedge infer --review-below 1.0` (so every row is flagged: a queue of ``--rows``), starts
`leukedge serve --review` on a free loopback port and measures, each ``--repeats`` times:

- ``GET /review`` and ``GET /v1/review/queue`` over HTTP (the server re-reads nothing when the
  results file did not change; the first, cold queue request is reported apart);
- in Chromium (when Playwright and a chromium are installed): from the start of navigation
  (a reload) until the queue's ``--rows`` entries are listed, and until the first image is
  drawn (the page's own ``performance.mark``s);
- ``POST /v1/review/decision`` (JSON, one keep-alive connection): the image hashed, the audit
  line written and fsync'd, answered; ``--decisions`` of them, one after another.

Usage:
    python bench/bench_review.py --rows 1000 --json docs/results/bench_review.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from leukedge.modelkit.evaluation.machine import describe_machine
from results_file import command_line, report

LEUKEDGE = str(Path(sys.executable).with_name("leukedge"))
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_results(folder: Path, rows: int, model: str) -> Path:
    rng = np.random.default_rng(0)
    images = folder / "imgs"
    images.mkdir()
    for i in range(rows):
        image = rng.integers(150, 255, (224, 224, 3), dtype=np.uint8)
        image[60:140, 50:150] = (rng.integers(120, 200), 40, rng.integers(90, 200))  # BGR
        cv2.imwrite(str(images / f"smear{i:04d}.png"), image)
    results = folder / "results.jsonl"
    subprocess.run([LEUKEDGE, "infer", str(images), "--model", model, "--format", "json",
                    "--output", str(results), "--review-below", "1.0"], check=True,
                   stderr=subprocess.DEVNULL)
    return results


def timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    conn.request("GET", path)
    answer = conn.getresponse()
    data = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"GET {path}: {answer.status} {data[:200]!r}")
    return (time.perf_counter() - started) * 1000, data


def timed_post(conn: http.client.HTTPConnection, body: dict) -> float:
    started = time.perf_counter()
    conn.request("POST", "/v1/review/decision", json.dumps(body),
                 {"Content-Type": "application/json"})
    answer = conn.getresponse()
    data = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"decision: {answer.status} {data[:200]!r}")
    return (time.perf_counter() - started) * 1000


def summary(values: list[float]) -> dict:
    ms = np.array(values)
    return {"n": len(ms), "median_ms": round(float(np.median(ms)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1)}


def browser_loads(url: str, rows: int, repeats: int) -> dict | None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        return None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    marks = {"leukedge-queue-shown": [], "leukedge-image-shown": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{url}/review")
        page.fill("#name", "bench")
        page.click("#start")
        for _ in range(repeats):
            page.reload()
            expect(page.locator("#items li")).to_have_count(rows, timeout=60_000)
            page.wait_for_function("() => document.querySelector('#image').naturalWidth > 0")
            for name, times in marks.items():  # ms since the navigation started
                times.append(page.evaluate(
                    "(n) => performance.getEntriesByName(n)[0].startTime", name))
        browser.close()
    return {"queue_listed": summary(marks["leukedge-queue-shown"]),
            "first_image_drawn": summary(marks["leukedge-image-shown"])}


def measure(results: Path, model: str, repeats: int, decisions: int) -> dict:
    port = free_port()
    proc = subprocess.Popen([LEUKEDGE, "serve", "--port", str(port), "--model", model,
                             "--review", str(results)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
                timed_get(conn, "/healthz")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(proc.stderr.read().decode()[-800:])
                time.sleep(0.2)
        cold_ms, data = timed_get(conn, "/v1/review/queue")
        items = json.loads(data)["items"]
        page = [timed_get(conn, "/review") for _ in range(repeats)]
        queue = [timed_get(conn, "/v1/review/queue") for _ in range(repeats)]
        both = [p[0] + q[0] for p, q in zip(page, queue)]
        in_browser = browser_loads(f"http://{HOST}:{port}", len(items), repeats)
        conn = http.client.HTTPConnection(HOST, port, timeout=60)  # the idle one timed out
        posts = [timed_post(conn, {"path": item["path"], "label": item["label"],
                                   "reviewer": "bench"}) for item in items[:decisions]]
        return {"queue_items": len(items), "page_bytes": len(page[0][1]),
                "queue_bytes": len(queue[0][1]), "queue_cold_ms": round(cold_ms, 1),
                "page_ms": summary([p[0] for p in page]),
                "queue_ms": summary([q[0] for q in queue]), "page_plus_queue_ms": summary(both),
                "browser_load_ms": in_browser, "decision_ms": summary(posts)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--json", type=Path, help="append the result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = make_results(Path(tmp), args.rows, args.model)
        result = {"command": command_line(),
                  "model": args.model, "rows": args.rows,
                  **measure(results, args.model, args.repeats, args.decisions),
                  "machine": describe_machine()}
    report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
