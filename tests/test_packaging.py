"""The package installs as `leukedge` from a regular wheel, with its subpackages and data."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=300)
    wheels = list(out.glob("leukedge-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_holds_the_package_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    code = [n for n in names if not n.startswith("leukedge-")]
    for expected in ("leukedge/runtime/decode.py", "leukedge/runtime/contract.py",
                     "leukedge/runtime/session.py", "leukedge/modelkit/graph/preprocess.py",
                     "leukedge/modelkit/evaluation/benchmark.py", "leukedge/cli/main.py",
                     "leukedge/train/__init__.py", "leukedge/export/__init__.py"):
        assert expected in code
    assert all(n.startswith("leukedge/") for n in code), code
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)
    bundled = [n for n in code if n.startswith("leukedge/runtime/assets/models/")]
    shipped = sorted((ROOT / "runtime" / "assets" / "models").glob("*.onnx"))
    assert sorted(n.rsplit("/", 1)[1] for n in bundled) == sorted(
        [p.name for p in shipped] + ["SHA256SUMS"])  # leukedge doctor checks them against it
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "leukedge = leukedge.cli.main:app" in entry_points


@pytest.mark.slow
def test_wheel_install_imports_from_outside_the_source_tree(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import sys, leukedge.runtime, leukedge.cli.main as m; "
            "print(leukedge.runtime.__file__); "
            "assert not any(k in sys.modules for k in ('tensorflow', 'keras', 'tf2onnx'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(site)), out.stdout


def test_editable_install_maps_the_source_tree():
    out = subprocess.run([sys.executable, "-c", "import leukedge.runtime as r; print(r.__file__)"],
                         cwd="/", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve().parent == ROOT / "runtime"
