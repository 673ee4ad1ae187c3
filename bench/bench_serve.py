"""Requests/s and latency of `leukedge serve` under concurrent clients, on 127.0.0.1 only.

Starts the real `leukedge serve --host 127.0.0.1 --port <free port>` process, waits for
``/healthz``, then for each concurrency level (default 1, 8, 32) runs that many asyncio
clients (httpx) that POST real smear JPEGs to ``/v1/classify`` back to back for ``--seconds``
seconds, after a short warm-up. Reports requests/s and p50/p99 latency per level, for each
``--batch-window-ms`` given (0 = no micro-batching), with the model and the machine.

Needs httpx (``pip install httpx``) beside ``leukedge[serve]``.

Usage:
    python bench/bench_serve.py --images ../shared/data/ALL/Original --seconds 15 \
        --windows 0 2 --json docs/results/bench_serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from leukedge.modelkit.evaluation.machine import describe_machine
from results_file import command_line, report

LEUKEDGE = str(Path(sys.executable).with_name("leukedge"))
HOST = "127.0.0.1"  # load tests go against loopback only


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {proc.stderr.read().decode()[-800:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("serve did not become healthy")


async def load(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker(k: int, until: float, record: bool) -> None:
            nonlocal failures
            i = k
            while time.monotonic() < until:
                body = bodies[i % len(bodies)]
                i += clients
                started = time.monotonic()
                r = await client.post(f"{url}/v1/classify",
                                      files={"file": ("smear.jpg", body, "image/jpeg")})
                if record:
                    if r.status_code == 200:
                        latencies.append(time.monotonic() - started)
                    else:
                        failures += 1

        warm = time.monotonic() + 2.0
        await asyncio.gather(*(worker(k, warm, False) for k in range(clients)))
        start = time.monotonic()
        await asyncio.gather(*(worker(k, start + seconds, True) for k in range(clients)))
        elapsed = time.monotonic() - start
    lat = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(lat), "failures": failures,
            "requests_per_s": round(len(lat) / elapsed, 1),
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                           "p99": round(float(np.percentile(lat, 99)), 1)}}


def run(model: str, window: float, bodies: list[bytes], levels: list[int],
        seconds: float, threads: int | None) -> dict:
    port = free_port()
    cmd = [LEUKEDGE, "serve", "--host", HOST, "--port", str(port), "--model", model,
           "--batch-window-ms", str(window)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url, proc)
        return {"batch_window_ms": window,
                "levels": [asyncio.run(load(url, bodies, c, seconds)) for c in levels]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=Path("../shared/data/ALL/Original"))
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--model", default="default")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--windows", type=float, nargs="+", default=[0.0, 2.0],
                        help="--batch-window-ms values to compare")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path, help="append the result here")
    args = parser.parse_args(argv)
    files = sorted(args.images.rglob("*.jpg"))
    files = files[:: max(1, len(files) // args.n_images)][: args.n_images]
    bodies = [p.read_bytes() for p in files]
    result = {"command": command_line(),
              "model": args.model, "seconds_per_level": args.seconds,
              "runs": [run(args.model, w, bodies, args.concurrency, args.seconds, args.threads)
                       for w in args.windows],
              "machine": describe_machine()}
    report(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
