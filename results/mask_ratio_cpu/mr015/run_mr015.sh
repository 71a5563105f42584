# The 15% row of the claims table: mask 0.15 beside 0.75 (the budget ratio of the equal-time view), the same
# preset as the committed sweep (1 epoch of all 50,000 images each, the short recipe, full test set), seeds 0-2
# one after another; re-running continues from the stages on disk.
set -x
date
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
for seed in 0 1 2; do
  maelab sweep --preset cpu --mask-ratios 0.15 0.75 --seed $seed --data-dir ../shared/data/cifar10 \
    --out runs/sweep-mr015-s$seed --quiet || exit $?
  date
done
maelab seeds runs/sweep-mr015-s0 runs/sweep-mr015-s1 runs/sweep-mr015-s2 --out runs/sweep-mr015-seeds
date
