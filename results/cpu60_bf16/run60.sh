set -x
D=../shared/data/cifar10
R=runs/cpu60-bf16
# steps fitted to 60 minutes from the 15-minute run's measured training time (10,500 steps in train_time_s)
STEPS=$(python -c "import json; s=json.load(open('runs/cpu15-bf16/summary.json')); print(int(round(10500*3600/s['train_time_s'], -2)))")
date
maelab pretrain --data-dir $D --recipe short --steps $STEPS --log-every 100 --out $R --quiet
date
maelab eval knn $R --data-dir $D --pooling cls mean --quiet
date
maelab eval linear $R --data-dir $D --pooling cls mean --quiet
date
