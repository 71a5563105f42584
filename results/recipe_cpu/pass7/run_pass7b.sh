# Pass 7 again, with the re-fit (commit 5de880b): the first try's two candidates ran 80% and 116% of the budget
# (seed0_unequal_budget/), so their stages were removed from the search folder (a copy of its recipe.json before:
# runs/recipe-pass5-s0.recipe-before-pass7b.json, not committed) and the same command trains them again; every
# other candidate's finished stages are reused.
set -x
date
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
maelab recipe --data-dir ../shared/data/cifar10 --candidates bs64 bs64-lr2e-3 bs128-lr2e-3 bs64-light-decoder \
  bs64-warmup0.25 bs64-lr2e-3-warmup0.25 bs64-deep-light-decoder bs64-wd0 --budget-minutes 15 --holdout 5000 --eval-subset 10000 --seed 0 \
  --out runs/recipe-pass5-s0 --quiet
date
