"""Frozen features of a run's encoder, then k-NN and a linear probe on them.

    MAELAB_DATA=../shared/data/cifar10 python examples/features_and_probes.py runs/example --train 5000 --test 1000
"""

from __future__ import annotations

import argparse

from maelab.data import class_balanced_subset, load_split
from maelab.eval.features import cached_features, run_encoder
from maelab.eval.knn import knn_accuracy
from maelab.eval.linear_probe import ProbeConfig, linear_probe

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run", help="run directory (its newest checkpoint is used)")
p.add_argument("--train", type=int, default=5000, help="class-balanced training images")
p.add_argument("--test", type=int, default=1000, help="class-balanced test images")
p.add_argument("--probe-epochs", type=int, default=20)
args = p.parse_args()

encoder, cfg = run_encoder(args.run)  # eval mode, masking off
train = class_balanced_subset(load_split(cfg.data.data_dir, "train"), args.train)
test = class_balanced_subset(load_split(cfg.data.data_dir, "test"), args.test)
train_f = cached_features(encoder, train.images, train.labels, "train", progress=False)  # {cls, mean}: (N, D)
test_f = cached_features(encoder, test.images, test.labels, "test", progress=False)

knn = knn_accuracy(train_f.get("cls"), train_f.labels, test_f.get("cls"), test_f.labels, ks=(10, 20))
probe_cfg = ProbeConfig(epochs=args.probe_epochs)
probe = linear_probe(train_f.get("cls"), train_f.labels, test_f.get("cls"), test_f.labels, probe_cfg)
print(f"features: train {tuple(train_f.get('cls').shape)}, test {tuple(test_f.get('cls').shape)}")
print("k-NN top-1 (%): " + ", ".join(f"k={k}: {acc:.1f}" for k, acc in knn.items()))
print(f"linear probe top-1 (%): {probe.test_accuracy:.1f} (lr {probe.best_lr:g}, chosen on held-out train features)")
