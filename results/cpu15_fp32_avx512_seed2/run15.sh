# Third seeds of the two 15-minute fp32 recipes on this CPU: the short recipe (the README's first command, seed 2)
# and the light-decoder variant (pass 5's holdout leader), one after the other, nothing else computing.
set -x
D=../shared/data/cifar10
date
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
for V in short light; do
  if [ $V = short ]; then R=runs/cpu15-fp32-avx512-seed2; F=""; else R=runs/cpu15-fp32-light-decoder-s2; F="--decoder-embed-dim 64 --decoder-depth 1"; fi
  maelab pretrain --data-dir $D --recipe short $F --minutes 15 --seed 2 --log-every 50 --out $R --quiet
  date
  maelab eval knn $R --data-dir $D --pooling cls mean --quiet
  date
  maelab eval linear $R --data-dir $D --pooling cls mean --quiet
  date
done
