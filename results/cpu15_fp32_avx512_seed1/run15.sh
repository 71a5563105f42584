set -x
D=../shared/data/cifar10
R=runs/cpu15-fp32-avx512-seed1
date
git rev-parse --short HEAD
grep -m1 "model name" /proc/cpuinfo
grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E "^avx|^amx" | tr '\n' ' '; echo
maelab pretrain --data-dir $D --recipe short --minutes 15 --seed 1 --log-every 50 --out $R --quiet
date
maelab eval knn $R --data-dir $D --pooling cls mean --quiet
date
maelab eval linear $R --data-dir $D --pooling cls mean --quiet
date
