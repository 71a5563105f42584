# The 4-ratio mask sweep (0.25/0.5/0.75/0.9, preset cpu) on this Intel Xeon, seeds 0-2 one after another,
# now with the equal-time fine-tune per ratio; re-running continues from the stages on disk.
set -x
. .venv/bin/activate
date -u
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
for seed in 0 1 2; do
  maelab sweep --preset cpu --seed $seed --data-dir ../shared/data/cifar10 --out runs/sweep-x-s$seed --quiet || exit $?
  date -u
done
maelab seeds runs/sweep-x-s0 runs/sweep-x-s1 runs/sweep-x-s2 --out runs/sweep-x-seeds
date -u
