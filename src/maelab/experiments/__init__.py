"""Experiments built from pretraining + evaluation: the mask-ratio sweep and MAE vs DINO."""
