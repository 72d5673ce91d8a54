#!/usr/bin/env bash
# CUDA checks and the CUDA rows of BENCHMARKS.md, in one go on a machine with a GPU:
#   bash benchmarks/cuda.sh [OUTDIR]
# The GPU tests (tests/test_cuda.py), then `torchinfer bench` for mobilenet_v2 and resnet50 on
# every backend x precision at batch 1 and 64 (random weights: speed only, verification off
# because random weights' near-tied logits say nothing about reduced precision; the tests
# verify it on calibrated weights).
set -u
out=${1:-runs/cuda}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider -s 2>&1 | tail -15
for model in mobilenet_v2 resnet50; do
  python3 -m torchinfer bench "$model" --device cuda --backend torch,torchscript,onnxruntime \
      --precision fp32,bf16,fp16 --batch 1,64 --images 128 --rounds 2 --no-verify --json \
      > "$out/bench_$model.json" 2> "$out/bench_$model.err"
  python3 - "$out/bench_$model.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["model"], r["device"], r["images"], "images")
for row in r["rows"]:
    if row["error"]:
        print(f'  {row["backend"]:<12}{row["precision"]:<6}{row["batch"]:>4}  {row["error"].splitlines()[0][:90]}')
    else:
        print(f'  {row["backend"]:<12}{row["precision"]:<6}{row["batch"]:>4}  {row["images_per_second"]:8.1f} img/s  '
              f'x{row["vs_torch_fp32"]:.2f}  pre {row["preprocess_ms"]:.2f}  inf {row["inference_ms"]:.3f}  post {row["postprocess_ms"]:.3f} ms/img')
PY
done
