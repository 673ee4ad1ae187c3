#!/usr/bin/env bash
# Rebuilds the bundled models from scratch on a CPU, as docs/RESULTS.md describes them:
#   fast    = EfficientNet-Lite0 trained over acquisition changes (recipe lite0-224-acq):
#             FP32, INT8 (full 8-bit weights, for VNNI CPUs) and INT8 for AVX2 CPUs (7-bit
#             weights where ONNX Runtime's AVX2 kernels pair products in 16 bits, 8-bit in
#             the depthwise convolutions), the last bundled only when an emulated AVX2 CPU
#             gives its native results and FP32's labels (bench/avx2_agreement.py);
#   default = fast + XGBoost on the hand-made features at 64 px, also fitted over acquisition
#             changes (recipe xgboost-64-acq), averaged (`leukedge ensemble`), in the same
#             three precisions (the CNN member is the INT8 one).
#
# 1. grouped 5-fold cross-validation of both recipes over the development images
#    (leukedge crossval), evaluated as shipped (leukedge crossval-eval: ONNX FP32 and INT8,
#    colour jitter, TTA, input checks), each writing calibration.json (temperature and review
#    threshold fitted on the out-of-fold predictions); then the pair scored on the same folds
#    (leukedge crossval-ensemble), which writes the ensemble's calibration.json;
# 2. the final models: each recipe on every development image except the bundled samples and
#    their duplicates (--exclude), 85% training / 15% validation;
# 3. export with the cross-validations' calibration, full-range INT8 static quantization of the
#    CNN (calibrated on 200 training images, gated on the validation split), the ensembles,
#    copy into the package, regenerate the test vectors.
#
#   bash bench/make_default_model.sh [DATA_DIR]     # default ../shared/data/ALL
#
# Times on the 2-core development machine (docs/RESULTS.md): about 35 minutes for the
# cross-validations' training, 25 for their evaluation, 12 for the final models, 7 for the
# emulated AVX2 check (needs Debian's qemu-user: apt-get install qemu-user).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/ALL}"
cnn_recipe=lite0-224-acq
xgb_recipe=xgboost-64-acq
cnn_cv="runs/cv/$cnn_recipe"
xgb_cv="runs/cv/$xgb_recipe"
cnn="${RUN:-runs/default-$cnn_recipe}"
xgb="${XGB_RUN:-runs/final-$xgb_recipe}"
models="runtime/assets/models"

for recipe in $cnn_recipe $xgb_recipe; do
  leukedge crossval "$data" --recipe "$recipe" --out runs/cv  # resumes if cut short
  leukedge crossval-eval "runs/cv/$recipe" --data "$data"
done
leukedge crossval-ensemble "$cnn_cv" "$xgb_cv" --json docs/results/cv_ensemble_cnn_xgboost64.json \
  --out runs/cv/ensemble-calibration.json

if [ ! -f "$cnn/run.json" ]; then
  leukedge train "$data" --recipe $cnn_recipe --split 85/15/0 \
    --exclude runtime/assets/samples --seed 2026 --out "$cnn"
fi
if [ ! -f "$xgb/run.json" ]; then
  leukedge train "$data" --recipe $xgb_recipe --split 85/15/0 \
    --exclude runtime/assets/samples --seed 2026 --out "$xgb"
fi
leukedge export "$cnn" --calibration "$cnn_cv/calibration.json" --data "$data" \
  --parity-images 64 --overwrite
leukedge quantize "$cnn/model.onnx" --data "$data" --split-manifest "$cnn/split.json" \
  --calib-size 200 --max-drop 0.3 --no-reduce-range --out "$cnn/model-int8.onnx" --overwrite
# the AVX2 file: its held-out cost in 4 cross-validation folds was 0.14 points on average
# (bench/avx2_folds.py); one validation image is 0.26 points, hence the wider gate here
leukedge quantize "$cnn/model.onnx" --data "$data" --split-manifest "$cnn/split.json" \
  --calib-size 200 --max-drop 0.6 --reduce-range --depthwise-8bit \
  --out "$cnn/model-int8-avx2.onnx" --overwrite
leukedge export "$xgb" --calibration "$xgb_cv/calibration.json" --data "$data" --overwrite

mkdir -p "$models"
install_model() {  # install_model SOURCE NAME: copied whole, then renamed into place
  cp "$1" "$models/leukedge-$2.onnx.tmp"
  mv "$models/leukedge-$2.onnx.tmp" "$models/leukedge-$2.onnx"
}
install_model "$cnn/model.onnx" fast-fp32
install_model "$cnn/model-int8.onnx" fast-int8
for precision in fp32 int8; do
  leukedge ensemble "$models/leukedge-fast-$precision.onnx" "$xgb/model.onnx" \
    --calibration runs/cv/ensemble-calibration.json \
    --out "$models/leukedge-default-$precision.onnx" --overwrite
done
# The AVX2 files, bundled only if both pass the gate: under an emulated Haswell (AVX2, no
# AVX-512, no VNNI) the same results as natively and FP32's labels (exit 1 otherwise)
mkdir -p runs/avx2
cp "$cnn/model-int8-avx2.onnx" runs/avx2/leukedge-fast-int8-avx2.onnx
leukedge ensemble runs/avx2/leukedge-fast-int8-avx2.onnx "$xgb/model.onnx" \
  --calibration runs/cv/ensemble-calibration.json \
  --out runs/avx2/leukedge-default-int8-avx2.onnx --overwrite
passed=yes
for name in default fast; do
  files="$models/leukedge-$name-fp32.onnx $models/leukedge-$name-int8.onnx runs/avx2/leukedge-$name-int8-avx2.onnx"
  python bench/avx2_agreement.py --data "$data" --limit 100 --out "runs/avx2/native-$name.json" \
    $files || passed=no
  qemu-x86_64 -cpu Haswell .venv/bin/python bench/avx2_agreement.py --data "$data" --limit 100 \
    --native "runs/avx2/native-$name.json" --reference-from-native \
    --out "runs/avx2/haswell-$name.json" $files || passed=no
done
if [ "$passed" = yes ]; then
  install_model runs/avx2/leukedge-fast-int8-avx2.onnx fast-int8-avx2
  install_model runs/avx2/leukedge-default-int8-avx2.onnx default-int8-avx2
else
  echo "an AVX2 file failed its emulated check: not bundled (AVX2 CPUs get FP32)"
fi
python bench/make_testvectors.py
python bench/upgrade_contracts.py  # SHA256SUMS: the files' sha256, checked by leukedge doctor
leukedge models
