"""Peak memory (RSS) of `leukedge infer` and `leukedge serve` on large images, each in a child.

Cases (issue 19; target: each under 1.5 GB):

- ``infer`` on a folder of 32 PNGs of 49 MP (7000 x 7000, flat colour with a smear pasted in:
  ~0.2 MB each on disk);
- ``infer`` on 48 JPEGs of 12 MP (4000 x 3000, a smear resized to fill the frame);
- ``serve`` under 20 concurrent uploads of a 49 MP PNG (127.0.0.1 only, each client posts once),
  and the RSS the server still holds 3 s after the burst.

The images are generated into a temporary folder, never kept. Peak RSS is the child's VmHWM,
read from /proc (Linux only). Run by hand, not in the test suite:

    python bench/bench_memory.py --json docs/results/bench_memory.json
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import cv2
import numpy as np

from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.runtime.models import SAMPLES_DIR
from results_file import report

LEUKEDGE = str(Path(sys.executable).with_name("leukedge"))
HOST = "127.0.0.1"
TARGET_MB = 1536


def make_images(folder: Path, count: int, size: tuple[int, int], ext: str) -> list[Path]:
    """``count`` frames of ``size`` (h, w): flat background, a real smear pasted in the middle."""
    smears = sorted(SAMPLES_DIR.glob("*/*.jpg"))
    folder.mkdir(parents=True)
    h, w = size
    paths = []
    for i in range(count):
        frame = np.full((h, w, 3), (214, 190, 228), np.uint8)  # pale stain background (BGR)
        smear = cv2.imread(str(smears[i % len(smears)]))
        side = min(h, w) // (4 if ext == ".png" else 1)
        top, left = (h - side) // 2, (w - side) // 2
        frame[top:top + side, left:left + side] = cv2.resize(smear, (side, side))
        path = folder / f"frame{i:03d}{ext}"
        path.write_bytes(cv2.imencode(ext, frame)[1].tobytes())
        paths.append(path)
    return paths


def status_mb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def run_child(args: list[str]) -> dict:
    """Run a command; its peak RSS (MB, VmHWM polled until it exits), exit code, seconds."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, status_mb(proc.pid, "VmHWM"))
        except (OSError, RuntimeError):
            pass
        time.sleep(0.05)
    stderr = proc.stderr.read().decode(errors="replace")
    return {"peak_rss_mb": peak, "exit_code": proc.returncode,
            "seconds": round(time.perf_counter() - started, 1), "stderr_tail": stderr[-300:]}


def infer_case(folder: Path, model: str) -> dict:
    out = folder.parent / f"{folder.name}.csv"
    return run_child([LEUKEDGE, "infer", str(folder), "-m", model, "-f", "csv", "-o", str(out)])


def _post(url: str, data: bytes, name: str, answers: list) -> None:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\""
            f"\r\nContent-Type: application/octet-stream\r\n\r\n").encode() + data \
        + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            answers.append(response.status)
    except Exception as e:  # an HTTP error still counts as an answer; a hang does not
        answers.append(getattr(e, "code", repr(e)))


def serve_case(image: Path, clients: int, model: str) -> dict:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([LEUKEDGE, "serve", "-m", model, "--host", HOST, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://{HOST}:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        idle = status_mb(proc.pid, "VmRSS")
        data, answers = image.read_bytes(), []
        started = time.perf_counter()
        threads = [threading.Thread(target=_post, args=(base + "/v1/classify", data,
                                                        f"u{i}.png", answers))
                   for i in range(clients)]
        for t in threads:
            t.start()
        peak = 0
        while any(t.is_alive() for t in threads):
            peak = max(peak, status_mb(proc.pid, "VmHWM"))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        time.sleep(3)
        return {"clients": clients, "statuses": sorted(map(str, answers)),
                "idle_rss_mb": idle, "peak_rss_mb": max(peak, status_mb(proc.pid, "VmHWM")),
                "held_after_burst_mb": status_mb(proc.pid, "VmRSS"), "seconds": round(seconds, 1)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--json", type=Path, help="append the run to this JSON list")
    args = parser.parse_args()
    cases = {}
    with tempfile.TemporaryDirectory(prefix="leukedge-bench-memory-") as tmp:
        root = Path(tmp)
        png49 = make_images(root / "png49", 32, (7000, 7000), ".png")
        jpg12 = make_images(root / "jpg12", 48, (3000, 4000), ".jpg")
        on_disk = {"png49_mb_each": round(png49[0].stat().st_size / 1e6, 2),
                   "jpg12_mb_each": round(jpg12[0].stat().st_size / 1e6, 2)}
        cases["infer_32_png_49mp"] = infer_case(root / "png49", args.model)
        print("infer 32 x 49 MP PNG:", cases["infer_32_png_49mp"], flush=True)
        cases["infer_48_jpeg_12mp"] = infer_case(root / "jpg12", args.model)
        print("infer 48 x 12 MP JPEG:", cases["infer_48_jpeg_12mp"], flush=True)
        cases["serve_20_uploads_png_49mp"] = serve_case(png49[0], 20, args.model)
        print("serve 20 x 49 MP PNG:", cases["serve_20_uploads_png_49mp"], flush=True)
    for case in cases.values():
        case["under_target"] = case["peak_rss_mb"] < TARGET_MB
    result = {"bench": "bench_memory", "model": args.model, "target_mb": TARGET_MB,
              "images": on_disk, "cases": cases, "machine": describe_machine(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report(result, args.json)


if __name__ == "__main__":
    main()
