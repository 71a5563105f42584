# Pass 7: a deeper encoder with the light decoder, and no weight decay, trained into pass 5's search folder (same seed, holdout and eval subset), so
# that the search's report ranks and pairs them with passes 5-6's six candidates on the same held-out images.
set -x
date
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
maelab recipe --data-dir ../shared/data/cifar10 --candidates bs64 bs64-lr2e-3 bs128-lr2e-3 bs64-light-decoder \
  bs64-warmup0.25 bs64-lr2e-3-warmup0.25 bs64-deep-light-decoder bs64-wd0 --budget-minutes 15 --holdout 5000 --eval-subset 10000 --seed 0 \
  --out runs/recipe-pass5-s0 --quiet
date
