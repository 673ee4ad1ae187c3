#!/usr/bin/env bash
# Rebuilds the bundled default model from scratch, reproducibly (fixed seed), on a CPU:
# train -> export (parity-checked) -> INT8 static quantization (calibrated on the train split,
# gated on the test split) -> copy both files into the package -> evaluate and benchmark.
#
#   bash bench/make_default_model.sh [DATA_DIR]     # default ../shared/data/ALL
#
# About 35 minutes of training on 2 cores. Results: docs/RESULTS.md explains every number.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/ALL}"
run="${RUN:-runs/ablate-none-s7}"
models="runtime/assets/models"

if [ ! -f "$run/model.keras" ]; then
  # The recipe of docs/RESULTS.md: cosine schedule from 1e-3 (the plateau rule stopped earlier
  # runs at epoch 14 while validation accuracy still swung), exact quarter turns + flips, a small
  # affine jitter (rotation 10, shift 0.1, zoom 0.05: cell size is a maturity cue), colour jitter,
  # light L2. No segmentation branch: bench/seg_ablation.py found the image-only model better on
  # both seeds tried, and the seed-7 run had the lowest validation loss of the four runs.
  # About 35 minutes on 2 idle cores.
  leukedge train "$data" --backbone small_cnn --input-size 128 --epochs 30 --seed 7 \
    --seg-features none --learning-rate 1e-3 --schedule cosine --l2 1e-4 --rotation 10 \
    --right-angles --shift 0.1 --zoom 0.05 --out "$run"
fi
leukedge export "$run" --out "$run/model.onnx" --data "$data" --parity-images 64 --review-below 0.8
# uint8 per-channel weights: ORT's u8u8 kernels do not saturate on AVX2 CPUs without VNNI, where
# int8 weights (even 7-bit) lost 3-4 points of top-1 agreement (bench/quant_sweep.py, docs/RESULTS.md).
leukedge quantize "$run/model.onnx" --method static --data "$data" \
  --weight-type uint8 --no-reduce-range \
  --split-manifest "$run/split.json" --calib-size 200 --max-drop 0.3 --out "$run/model-int8.onnx"
leukedge quantize "$run/model.onnx" --method fp16 --data "$data" \
  --split-manifest "$run/split.json" --out "$run/model-fp16.onnx"

mkdir -p "$models"
cp "$run/model.onnx" "$models/leukedge-default-fp32.onnx"
cp "$run/model-int8.onnx" "$models/leukedge-default-int8.onnx"

leukedge compare "$models/leukedge-default-fp32.onnx" "$models/leukedge-default-int8.onnx" \
  "$run/model-fp16.onnx" --keras "$run/model.keras" --data "$data" \
  --split-manifest "$run/split.json" --format markdown --out "$run/compare"
python bench/eval_robustness.py "$models/leukedge-default-fp32.onnx" \
  "$models/leukedge-default-int8.onnx" --data "$data" --split-manifest "$run/split.json" \
  --json "$run/robustness.json"
