set -x
D=../shared/data/cifar10
R=runs/cpu15-bf16-seed1
date
grep -m1 -o "avx512_bf16" /proc/cpuinfo
maelab pretrain --data-dir $D --recipe short --minutes 15 --seed 1 --log-every 50 --out $R --quiet
date
maelab eval knn $R --data-dir $D --pooling cls mean --quiet
date
maelab eval linear $R --data-dir $D --pooling cls mean --quiet
date
