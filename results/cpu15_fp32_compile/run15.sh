set -x
D=../shared/data/cifar10
date
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
for S in 0 1; do
  R=runs/cpu15-fp32-compile-s$S
  maelab pretrain --data-dir $D --recipe short --compile --minutes 15 --seed $S --log-every 50 --out $R --quiet
  date
  maelab eval knn $R --data-dir $D --pooling cls mean --quiet
  date
  maelab eval linear $R --data-dir $D --pooling cls mean --quiet
  date
done
