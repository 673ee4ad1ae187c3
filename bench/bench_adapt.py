"""`leukedge adapt` on a simulated site: one consistent acquisition shift (modelkit/acquisition's
``site`` at --strength) applied to the development images; per draw (--seeds), --per-class
labelled images per class are written as a site folder and adapted on (timed, through the
same function as the CLI), and the parent and the adapted model are scored on every other
image as a lab would see them (accuracy, flagged, unflagged errors).

The parent is run once over all shifted images with its members' features as extra outputs
(the probe adapt itself uses); the adapted model's predictions on the rest are its site head
applied to those outputs in numpy, from the weights read back out of model.onnx, and checked
against the real file on --parity images of the rest per draw (max |probs difference|).
On the development images the bundled models are in sample: the parent has seen these smears
unshifted, which makes its row an upper bound.

    python bench/bench_adapt.py --data ../shared/data/ALL --from runtime/assets/models/leukedge-default-fp32.onnx \\
        --json docs/results/adapt.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from leukedge.modelkit.acquisition import get_shift
from leukedge.modelkit.adaptation.adapt import adapt_to_site
from leukedge.modelkit.adaptation.offset_logistic import one_blas_thread
from leukedge.modelkit.adaptation.site_graph import feature_tensors, parent_offsets, probe_model
from leukedge.modelkit.adaptation.site_model import measure, parent_files
from leukedge.modelkit.confidence import softmax
from leukedge.modelkit.evaluation.labelled import load_labelled
from leukedge.modelkit.evaluation.machine import describe_machine, machine_line
from leukedge.modelkit.evaluation.review_scores import review_scores
from leukedge.runtime.classifier import Classifier
from leukedge.runtime.contract import save_model
from leukedge.runtime.files import sha256_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import append_run  # noqa: E402

SEED = 2026  # the robustness suite's: the same pixels for the same image and shift


def shifted_images(paths, kind: str, strength: float) -> list[np.ndarray]:
    from leukedge.runtime.decode import load_image

    shift = get_shift(kind)
    return [shift.apply(load_image(p), strength, np.random.default_rng([SEED, i]))
            for i, p in enumerate(paths)]


def head_of(model_path: Path) -> tuple[list[np.ndarray], np.ndarray, float]:
    """(W per features tensor, b, T) read back out of an adapted model file."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model_path)).graph.initializer}
    weights = [inits[f"site/weights{i}"] for i in range(sum(k.startswith("site/weights")
                                                            for k in inits))]
    return weights, inits["site/bias"][0], 1.0 / float(inits["site/inv_temperature"][0])


def draw(args, images, labels, data, parent_predictions, names, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), args.per_class,
                                        replace=False) for c in range(int(labels.max()) + 1)])
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        for i in chosen:
            folder = site / data.classes[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
        started = time.perf_counter()
        result = adapt_to_site(site, Path(tmp) / "run", args.parent, threads=args.threads)
        seconds = time.perf_counter() - started
        model = Path(tmp) / "run" / "model.onnx"
        clf = Classifier(model, provider="cpu", threads=args.threads)
        weights, bias, temperature = head_of(model)
        probe = data.probe
        logits = parent_offsets(probe.parent_probs[rest]) + bias + sum(
            probe.features[n][rest] @ w for n, w in zip(names, weights))
        probs = softmax(logits, temperature)
        check = rest[:args.parity]
        got = clf.run(np.stack([images[i] for i in check]), ["probs"])["probs"]
        parity = float(np.abs(got - probs[:len(check)]).max())
    adapted = [clf.prediction_from_outputs({"probs": p, **{k: v[i] for k, v in
                                                             probe.measures.items()}})
               for p, i in zip(probs, rest)]
    paths = [str(data.paths[i]) for i in rest]
    before = review_scores(labels[rest], [parent_predictions[i] for i in rest], data.classes, paths)
    after = review_scores(labels[rest], adapted, data.classes, paths)
    keys = ("n", "accuracy", "accuracy_ci95", "flagged_rate", "errors", "errors_caught",
            "unflagged_errors", "cost_per_sample")
    return {"seed": seed, "adapt_seconds": round(seconds, 1), "parity_max_abs": parity,
            "review_below": clf.review_below, "input_checks": clf.contract.input_checks.to_dict(),
            "held_out_in_adapt": {k: result.report["adapted"]["scores"][k] for k in keys},
            "parent": {k: before[k] for k in keys}, "adapted": {k: after[k] for k in keys},
            "adapted_unflagged": after["unflagged"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--from", dest="parent", default="default-fp32")
    parser.add_argument("--kind", default="site")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--parity", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, help="at most N images, spread evenly (a smoke run)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    files = parent_files(args.parent)
    parent = Classifier(files.fitted, provider="cpu", threads=args.threads)
    data = load_labelled(args.data, parent.classes, limit=args.limit)
    print(f"{len(data)} images, shift {args.kind} {args.strength:g}", file=sys.stderr)
    images = shifted_images(data.paths, args.kind, args.strength)
    import onnx

    proto = onnx.load(str(files.fitted))
    names = feature_tensors(proto)
    with tempfile.TemporaryDirectory() as tmp, one_blas_thread():
        save_model(probe_model(proto), Path(tmp) / "probe.onnx")
        probe_clf = Classifier(Path(tmp) / "probe.onnx", provider="cpu", threads=args.threads)
        started = time.perf_counter()
        probe, parent_predictions = measure(probe_clf, images, data.labels, names)
        print(f"parent probe: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    bundle = argparse.Namespace(classes=data.classes, paths=data.paths, probe=probe)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.append(draw(args, images, data.labels, bundle, parent_predictions, names, seed))
        r = rows[-1]
        print(f"seed {seed}: parent {r['parent']['accuracy']:.4f} / "
              f"{r['parent']['flagged_rate']:.3f} / {r['parent']['unflagged_errors']}; adapted "
              f"{r['adapted']['accuracy']:.4f} / {r['adapted']['flagged_rate']:.3f} / "
              f"{r['adapted']['unflagged_errors']} in {r['adapt_seconds']:.0f} s "
              f"(parity {r['parity_max_abs']:.1e})", file=sys.stderr)
    machine = describe_machine()
    result = {"bench": "adapt", "parent": str(files.fitted), "parent_sha256":
              sha256_file(files.fitted), "shift": args.kind, "strength": args.strength,
              "per_class": args.per_class, "command": " ".join(sys.argv), "rows": rows,
              "machine": machine}
    if args.json:
        append_run(args.json, result)
    print(markdown(rows))
    print(machine_line(machine))
    return 0


def markdown(rows: list[dict]) -> str:
    lines = ["| draw | model | accuracy (95% CI) | flagged | unflagged errors | adapt time |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        for side in ("parent", "adapted"):
            s = r[side]
            low, high = s["accuracy_ci95"]
            took = f"{r['adapt_seconds']:.0f} s" if side == "adapted" else "-"
            lines.append(f"| {r['seed']} | {side} | {100 * s['accuracy']:.2f}% ({100 * low:.1f}-"
                         f"{100 * high:.1f}) | {100 * s['flagged_rate']:.1f}% | "
                         f"{s['unflagged_errors']} of {s['n']} | {took} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
