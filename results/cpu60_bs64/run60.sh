set -x
D=../shared/data/cifar10
R=runs/cpu60-bs64
date
maelab pretrain --data-dir $D --batch-size 64 --lr 1e-3 --warmup-epochs 1 --norm-pix-loss --steps 7800 --log-every 20 --out $R --quiet
date
maelab eval knn $R --data-dir $D --pooling cls mean --quiet
date
maelab eval linear $R --data-dir $D --pooling cls mean --quiet
date
