# Training-loop speed of the short recipe, eager against --compile, interleaved (E C E C ...): each run is
# `maelab pretrain` itself (data path, augmentation, AdamW, logging), 400 steps of 64 images; the speed is the
# loop's img/s after its first 50 steps (maelab.budget.loop_speed, as --minutes calibrates), so compilation and
# allocation are excluded. Usage: bash results/cpu15_fp32_compile/loop_speed.sh ROUNDS
set -e
D=../shared/data/cifar10
ROUNDS=${1:-3}
date -u; git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
for i in $(seq 1 "$ROUNDS"); do
  for V in eager compile; do
    F=""; [ "$V" = compile ] && F="--compile"
    O=runs/loop-speed/$V-$i; rm -rf "$O"
    maelab pretrain --data-dir $D --recipe short $F --steps 400 --seed 0 --log-every 50 --keep-checkpoints 1 --out "$O" --quiet >/dev/null 2>&1
    python -c "
import sys; from maelab import budget, rundir
s = budget.loop_speed(rundir.read_metrics('$O'), 64, skip_steps=50)
print('$V', $i, s['img_per_s'], 'img/s over', s['timed_steps'], 'steps', s['timed_seconds'], 's')"
  done
done
date -u
