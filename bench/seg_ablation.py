"""Does the seed's segmentation branch earn its cost? A table over training runs of both variants.

Trains (unless the run folders exist) the default recipe with the slim segmentation branch
(``--seg-features gap``) and without it (``--seg-features none``) for each seed, then tabulates the
test-split metrics from each run folder's run.json, the colour-jitter accuracy of its exported
FP32 model (``bench/eval_robustness.py``) when ``robustness.json`` is there, and the paired
difference per seed. Each seed has its own duplicate-aware split, so compare within a seed.

Usage (about 40 + 20 minutes of training per seed on 2 cores; runs already trained are reused):
    python bench/seg_ablation.py --seeds 42 7 --runs runs --data ../shared/data/ALL \
        --markdown docs/results/seg_ablation.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RECIPE = ["--backbone", "small_cnn", "--input-size", "128", "--epochs", "30", "--learning-rate",
          "1e-3", "--schedule", "cosine", "--l2", "1e-4", "--rotation", "10", "--right-angles",
          "--shift", "0.1", "--zoom", "0.05"]
VARIANTS = {"slim": "gap", "none": "none"}


def run_dir(runs: Path, variant: str, seed: int) -> Path:
    if variant == "slim" and seed == 42:
        return runs / "default3-small_cnn-128"  # the bundled default's run
    return runs / f"ablate-{variant}-s{seed}"


def train_missing(runs: Path, data: Path, seeds: list[int]) -> None:
    leukedge = str(Path(sys.executable).with_name("leukedge"))
    for seed in seeds:
        for variant, seg in VARIANTS.items():
            out = run_dir(runs, variant, seed)
            if not (out / "run.json").is_file():
                subprocess.run([leukedge, "train", str(data), *RECIPE, "--seed", str(seed),
                                "--seg-features", seg, "--out", str(out)], check=True)


def row(out: Path) -> dict:
    run = json.loads((out / "run.json").read_text())
    m = run["test_metrics"]
    jitter = None
    robustness = out / "robustness.json"
    if robustness.is_file():
        fp32 = [r for r in json.loads(robustness.read_text())["rows"] if r["precision"] == "fp32"]
        jitter = fp32[0]["jitter"]["accuracy"] if fp32 else None
    return {"run": out.name, "seed": run["seed"], "seg_features": run["seg_features"],
            "parameters": run["parameters"]["total"], "n": m["n"], "accuracy": m["accuracy"],
            "ci95": m["accuracy_ci95"], "cost_per_sample": m["cost_per_sample"],
            "macro_f1": m["macro_f1"], "errors": m["n"] - round(m["accuracy"] * m["n"]),
            "jitter_accuracy": jitter, "epochs": run["training"]["epochs_run"],
            "train_seconds": run["training"]["seconds"]}


def markdown(rows: list[dict]) -> str:
    lines = ["| seed | segmentation branch | parameters | test accuracy (95% CI) | errors / n | "
             "cost/sample | macro F1 | jitter accuracy | training |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        jitter = "-" if r["jitter_accuracy"] is None else f"{r['jitter_accuracy']:.2%}"
        lines.append(f"| {r['seed']} | {'slim (8-16-32-64)' if r['seg_features'] == 'gap' else 'none'}"
                     f" | {r['parameters']:,} | {r['accuracy']:.2%} ({r['ci95'][0]:.2%}-"
                     f"{r['ci95'][1]:.2%}) | {r['errors']} / {r['n']} | {r['cost_per_sample']:.3f} | "
                     f"{r['macro_f1']:.4f} | {jitter} | {r['epochs']} epochs, "
                     f"{r['train_seconds'] / 60:.0f} min |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ALL"))
    parser.add_argument("--no-train", action="store_true", help="only tabulate existing runs")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if not args.no_train:
        train_missing(args.runs, args.data, args.seeds)
    rows = [row(run_dir(args.runs, v, s)) for s in args.seeds for v in VARIANTS
            if (run_dir(args.runs, v, s) / "run.json").is_file()]
    text = markdown(rows)
    print(text)
    print(json.dumps(rows, indent=1))
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
