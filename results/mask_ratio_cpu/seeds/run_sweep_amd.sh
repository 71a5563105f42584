# Seeds 3 and up (default 3; pass others as arguments) of the 4-ratio mask sweep (0.25/0.5/0.75/0.9, preset cpu), run on an AMD EPYC (AVX2, no AVX-512,
# so fp32) after seeds 0-2 ran on the Intel Xeon; re-running continues from the stages on disk.
set -x
. .venv/bin/activate
date -u
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m3 -E "cpu family|^model\s" /proc/cpuinfo | head -2
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
for seed in "${@:-3}"; do
  maelab sweep --preset cpu --seed $seed --data-dir ../shared/data/cifar10 --out runs/sweep-a-s$seed --quiet || exit $?
  date -u
done
date -u
