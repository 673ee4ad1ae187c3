#!/usr/bin/env bash
# CUDA check of the runtime on a GPU machine that has Python, numpy, OpenCV, Typer and an
# onnxruntime build, but no network: installs leukedge without dependencies, then runs
# `leukedge infer` and `leukedge bench` with --provider cuda and cpu. Results go to $OUT or ./gpu-out.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"; mkdir -p "$out"
nvidia-smi -L 2>&1 | tee "$out/gpu.txt"
python3 - <<'PY' 2>&1 | tee -a "$out/gpu.txt"
import onnxruntime as o, importlib.metadata as m
print("onnxruntime", o.__version__, o.get_device(), o.get_available_providers())
for d in ("onnxruntime", "onnxruntime-gpu"):
    try: print(d, m.version(d))
    except m.PackageNotFoundError: print(d, "not installed")
PY
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
samples=runtime/assets/samples
for p in cuda auto cpu; do
  echo "== leukedge infer --provider $p" | tee -a "$out/infer.txt"
  leukedge infer "$samples" --recursive --provider "$p" >>"$out/infer.txt" 2>&1
  echo "exit $?" | tee -a "$out/infer.txt"
done
for p in cuda cpu; do
  leukedge bench runtime/assets/models/leukedge-default-fp32.onnx --provider "$p" \
    --batch-sizes 1,8,32 --iterations 50 --format json >"$out/bench-fp32-$p.json" 2>&1
  echo "bench fp32 $p exit $?"
done
tail -n 5 "$out"/*.txt
