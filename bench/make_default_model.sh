#!/usr/bin/env bash
# Rebuilds the bundled default model from scratch on a CPU, as docs/RESULTS.md describes it:
#
# 1. grouped 5-fold cross-validation of the recipe over the development images
#    (bench/crossval.py), evaluated as shipped (bench/crossval_eval.py: ONNX FP32 and INT8,
#    colour jitter, TTA, input checks): the reported figures, and calibration.json (temperature
#    and review threshold fitted on the out-of-fold predictions);
# 2. the final model: the same recipe on every development image except the bundled samples
#    and their duplicates (--exclude), 85% training / 15% validation for early stopping;
# 3. export with the cross-validation's calibration, full-range INT8 static quantization
#    (calibrated on 200 training images, gated on the validation split), copy both files into
#    the package, regenerate the test vectors.
#
#   bash bench/make_default_model.sh [DATA_DIR]     # default ../shared/data/ALL
#
# Times on the 2-core development machine (docs/RESULTS.md): about 30 minutes for the
# cross-validation's training, 20 for its evaluation, 10 for the final model.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/ALL}"
recipe="lite0-224-s3"
cv="runs/cv/$recipe"
run="${RUN:-runs/default-lite0}"
models="runtime/assets/models"

python bench/crossval.py --recipe "$recipe" --data "$data" --out runs/cv  # resumes if cut short
python bench/crossval_eval.py "$cv" --data "$data"

if [ ! -f "$run/run.json" ]; then
  # The recipe's settings are leukedge train's defaults for efficientnet_lite0 (ImageNet
  # weights offline, two-phase, fine-tuning from stage 3, 10 augmented copies per image).
  leukedge train "$data" --backbone efficientnet_lite0 --split 85/15/0 \
    --exclude runtime/assets/samples --seed 2026 --out "$run"
fi
leukedge export "$run" --calibration "$cv/calibration.json" --data "$data" \
  --parity-images 64 --overwrite
leukedge quantize "$run/model.onnx" --data "$data" --split-manifest "$run/split.json" \
  --calib-size 200 --max-drop 0.3 --out "$run/model-int8.onnx" --overwrite

mkdir -p "$models"
cp "$run/model.onnx" "$models/leukedge-default-fp32.onnx.tmp"
cp "$run/model-int8.onnx" "$models/leukedge-default-int8.onnx.tmp"
mv "$models/leukedge-default-fp32.onnx.tmp" "$models/leukedge-default-fp32.onnx"
mv "$models/leukedge-default-int8.onnx.tmp" "$models/leukedge-default-int8.onnx"
python bench/make_testvectors.py
leukedge models
