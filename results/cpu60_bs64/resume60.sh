set -x
D=../shared/data/cifar10
R=runs/cpu60-bs64
date
maelab pretrain --resume $R --quiet
date
maelab eval knn $R --data-dir $D --pooling cls mean --quiet
date
maelab eval linear $R --data-dir $D --pooling cls mean --quiet
date
