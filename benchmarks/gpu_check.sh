#!/usr/bin/env bash
# One prepared call on a GPU machine (the `device` tool): maelab's GPU path end to end, without installing it.
#   bash benchmarks/gpu_check.sh DATA_DIR OUT_DIR [EPOCHS]
# DATA_DIR: a CIFAR-10 ImageFolder (a subset travels; ../shared does not). Writes to OUT_DIR: env.txt,
# pytest.txt, log.txt (every command and its output) and results.tar.gz (run folders without checkpoints).
set -u
DATA=$1 OUT=$2 EPOCHS=${3:-20}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MAELAB_CACHE=/tmp/maelab-cache
RUNS=/tmp/maelab-gpu-runs
rm -rf "$RUNS" && mkdir -p "$RUNS"
step() { echo "\$ maelab $* [$(date -u +%FT%TZ)]"; timeout 400 python3 -m maelab "$@" 2>&1; echo "rc=$?"; }
{
  date -u; nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name(0))"
  lscpu | grep -E 'Model name|^CPU\(s\)'
} > "$OUT/env.txt" 2>&1
timeout 180 python3 -m pytest -q -p no:cacheprovider tests > "$OUT/pytest.txt" 2>&1; echo "pytest rc=$?" >> "$OUT/pytest.txt"
{
  step pretrain --data-dir "$DATA" --recipe short --epochs "$EPOCHS" --out "$RUNS/mae" --quiet
  step eval knn "$RUNS/mae" --data-dir "$DATA" --pooling cls mean --quiet
  step eval linear "$RUNS/mae" --data-dir "$DATA" --pooling cls mean --quiet
  step reconstruct "$RUNS/mae" --data-dir "$DATA" --quiet
  step bench --batch-size 256 --mask-ratio 0.75 0.0 --rounds 5 --steps 20 --warmup 5 --speedup
  step bench --batch-size 256 --mask-ratio 0.75 0.0 --rounds 5 --steps 20 --warmup 5 --speedup --precision fp32
} > "$OUT/log.txt"
tar czf "$OUT/results.tar.gz" --exclude=checkpoints --exclude='*.safetensors' --exclude=state.pt -C "$RUNS" .
