"""Helpers for the `leukedge watch` tests: real processes, small waits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LEUKEDGE = [sys.executable, "-m", "leukedge.cli"]
FAST = ("--settle", "0.2", "--poll", "0.1", "--give-up", "3")


def unprivileged() -> list[str]:
    """A command prefix under which file permissions apply (root has them dropped)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def start(inbox, out: Path, model: Path, *extra: str, prefix=(), **popen) -> subprocess.Popen:
    return subprocess.Popen([*prefix, *LEUKEDGE, "watch", inbox, "-o", str(out), "-m", str(model),
                             *FAST, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def run_watch(inbox, out: Path, model: Path, *extra: str, timeout: float = 60
              ) -> subprocess.CompletedProcess:
    """For invocations that must exit by themselves (refusals)."""
    return subprocess.run([*LEUKEDGE, "watch", inbox, "-o", str(out), "-m", str(model), *FAST,
                           *extra], capture_output=True, text=True, timeout=timeout)


def rows(out: Path) -> list[dict]:
    if not out.exists():
        return []
    lines = out.read_bytes().decode("utf-8").split("\n")
    found = [json.loads(line) for line in lines if line.strip()]
    return [r for r in found if "path" in r]


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    """SIGTERM; (exit code, stderr)."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err.decode("utf-8", "replace")


def distinct_jpeg(data: bytes, tag: int) -> bytes:
    """The same picture with a JPEG comment: other bytes, so another image to the content key."""
    comment = f"copy {tag}".encode()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def drop(folder: Path, name: str, data: bytes) -> Path:
    """Write an image the way a careful writer does: hidden name, then rename."""
    tmp = folder / f".{name}"
    tmp.write_bytes(data)
    os.rename(tmp, folder / name)
    return folder / name
