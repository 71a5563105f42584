set -x
D=../shared/data/cifar10
R=runs/cpu15-bf16
date
lscpu | grep -E "Model name|Flags" | sed 's/Flags:.*/Flags (avx512*, amx*): &/' | tr ' ' '\n' | grep -E "Model|name|EPYC|avx512|amx|Flags" | tr '\n' ' '; echo
maelab pretrain --data-dir $D --recipe short --steps 10500 --log-every 50 --out $R --quiet
date
maelab eval knn $R --data-dir $D --pooling cls mean --quiet
date
maelab eval linear $R --data-dir $D --pooling cls mean --quiet
date
