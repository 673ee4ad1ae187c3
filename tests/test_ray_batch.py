"""`leukedge infer --ray`: Ray Data actors (two, on a small local Ray) write the rows a local
run writes, in input order; a corrupt image is an error row, not a failed job. The refusals
(Ray missing, overlays) need no Ray."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dataset_builders import synthetic_smear, write_jpeg
from leukedge.cli.main import app

VARYING = ("seconds", "timestamp")  # measured per run
# Ray Data 2.60 reads its own deprecated settings when it copies its context to the actors
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def rows(text: str) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VARYING}
            for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def images(tmp_path_factory, sample_images) -> list:
    """Seven generated smears of two sizes, a corrupt JPEG among them, and two real ones."""
    folder = tmp_path_factory.mktemp("ray_inputs")
    rng = np.random.default_rng(7)
    paths = [write_jpeg(folder / f"gen{i}.jpg", synthetic_smear(rng, 48 if i % 2 else 64))
             for i in range(7)]
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(paths[0].read_bytes()[:300])
    return paths[:3] + [corrupt] + paths[3:] + sample_images[:2]


@pytest.fixture(scope="module")
def small_ray():
    """A local Ray of two CPUs (so two actors), no dashboard, a small object store, started
    as `--ray local` starts it."""
    ray = pytest.importorskip("ray", reason="needs Ray Data: pip install 'leukedge[ray]'")
    pytest.importorskip("ray.data", reason="needs Ray Data: pip install 'leukedge[ray]'")
    from leukedge.runtime.ray_batch import connect

    # connect retries a start whose raylet misses Ray's 30 s on a loaded machine
    assert connect("local", num_cpus=2)  # True: this process was not connected yet
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [3, 1])  # 1: 10 batches, 2 per actor call
def test_two_ray_actors_write_the_local_runs_rows_in_order(small_ray, images, tiny_model_path,
                                                           batch_size):
    common = ["infer", *images, "-m", tiny_model_path, "-f", "json", "--batch-size",
              batch_size, "--threads", 1]
    local = invoke(*common)
    on_ray = invoke(*common, "--ray", "local")  # joins the Ray this process already runs
    assert local.exit_code == on_ray.exit_code == 1, on_ray.output  # 1: the corrupt file
    assert small_ray.cluster_resources()["CPU"] == 2
    expected = rows(local.stdout)
    assert [r["path"] for r in expected] == [str(p) for p in images]
    assert rows(on_ray.stdout) == expected
    bad = rows(on_ray.stdout)[3]
    assert bad["label"] is None and bad["error"].startswith(f"{images[3]}: truncated JPEG")
    assert "9/10 images classified" in on_ray.stderr


def test_without_ray_the_error_says_which_extra(monkeypatch, sample_images, tiny_model_path):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = invoke("infer", sample_images[0], "-m", tiny_model_path, "--ray", "local")
    assert result.exit_code == 2
    assert "--ray needs Ray Data" in result.stderr and "leukedge[ray]" in result.stderr


def test_overlays_are_refused_under_ray(tmp_path, sample_images, tiny_model_path):
    result = invoke("infer", sample_images[0], "-m", tiny_model_path, "--ray", "local",
                    "--overlay-dir", tmp_path / "ov")
    assert result.exit_code == 2 and "--overlay-dir cannot be used with --ray" in result.stderr
