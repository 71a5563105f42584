# Pass 6: the two warm-up candidates, trained into pass 5's search folder (same seed, holdout and eval subset), so
# that the search's report ranks and pairs them with pass 5's four candidates on the same held-out images.
set -x
date
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
maelab recipe --data-dir ../shared/data/cifar10 --candidates bs64 bs64-lr2e-3 bs128-lr2e-3 bs64-light-decoder \
  bs64-warmup0.25 bs64-lr2e-3-warmup0.25 --budget-minutes 15 --holdout 5000 --eval-subset 10000 --seed 0 \
  --out runs/recipe-pass5-s0 --quiet
date
