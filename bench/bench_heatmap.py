"""What the ``heatmap`` output costs: the same model with and without it, images/s on real smears.

The model without the heatmap is the file as given (``--model``, default the bundled default
FP32, which predates the output); the one with it is the same graph plus the heatmap nodes
(:func:`leukedge.modelkit.graph.heatmap.add_heatmap`), so the difference is the heatmap alone.
Both run the same ~200 decoded images of ../shared/data/ALL in batches of 16, alternating A/B
rounds (a shared CPU drifts), single-threaded sessions as ``leukedge infer`` opens for folders,
every output a prediction reads (the heatmap included for the model that has it).

    python bench/bench_heatmap.py [--model PATH] [--images 200] [--rounds 5]

Prints a JSON line: images/s of each (median over rounds) and the cost in % of throughput; and,
because wall-clock rates on a CPU shared with a training job drift by tens of percent between
rounds, the heatmap nodes' share of the model's own kernel time from ONNX Runtime's profiler
(the same runs, one profiled session), which contention affects far less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from leukedge.modelkit.evaluation.machine import describe_machine
from leukedge.modelkit.graph.heatmap import HEATMAP, add_heatmap, has_heatmap, remove_heatmap
from leukedge.runtime.contract import contract_of_proto
from leukedge.runtime.decode import load_image
from leukedge.runtime.models import bundled_models
from leukedge.runtime.session import create_session

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ALL"
BATCH = 16


def real_images(count: int) -> list[np.ndarray]:
    paths = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    picks = np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int))
    return [load_image(paths[i]) for i in picks]


def images_per_second(session, names: list[str], batches: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for batch in batches:
        session.run(names, {"image": batch})
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def kernel_share(proto: onnx.ModelProto, names: list[str], batches: list[np.ndarray]) -> float:
    """Share (%) of ONNX Runtime's node time spent in the ``heatmap/`` nodes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(proto.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        for batch in batches:
            session.run(names, {"image": batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    ours = sum(e["dur"] for e in nodes if e["name"].startswith("heatmap/"))
    return 100.0 * ours / max(1, sum(e["dur"] for e in nodes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: no dataset at {DATA.resolve()}", file=sys.stderr)
        return 0
    path = args.model or bundled_models()["default-fp32"]
    proto = onnx.load(str(path))
    without = remove_heatmap(proto) if has_heatmap(proto) else proto
    with_map = add_heatmap(without)
    outputs = [o for o in contract_of_proto(proto, str(path)).outputs
               if o not in ("stain_mask", HEATMAP)]
    pixels = real_images(args.images)
    shape = statistics.mode(p.shape for p in pixels)
    pixels = [p for p in pixels if p.shape == shape]  # one size per batch
    batches = [np.stack(pixels[i:i + BATCH]) for i in range(0, len(pixels), BATCH)]
    sessions = {"without": (create_session(without.SerializeToString(), provider="cpu",
                                           threads=1)[0], outputs),
                "with": (create_session(with_map.SerializeToString(), provider="cpu",
                                        threads=1)[0], outputs + [HEATMAP])}
    for session, names in sessions.values():  # warm-up
        images_per_second(session, names, batches[:1])
    rates: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.rounds):
        for key, (session, names) in sessions.items():
            rates[key].append(images_per_second(session, names, batches))
    median = {k: statistics.median(v) for k, v in rates.items()}
    share = kernel_share(with_map, outputs + [HEATMAP], batches)
    machine = describe_machine()
    print(json.dumps({
        "model": Path(path).name, "images": sum(len(b) for b in batches),
        "image_size": list(shape[:2]), "batch": BATCH, "rounds": args.rounds,
        "images_per_s_without": round(median["without"], 1),
        "images_per_s_with": round(median["with"], 1),
        "cost_percent": round(100 * (1 - median["with"] / median["without"]), 2),
        "heatmap_kernel_time_percent": round(share, 3),
        "rounds_without": [round(r, 1) for r in rates["without"]],
        "rounds_with": [round(r, 1) for r in rates["with"]],
        "cpu": machine.get("cpu_model"), "threads": 1}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
