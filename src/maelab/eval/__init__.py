"""Evaluation of frozen and fine-tuned encoders: features, k-NN, linear probe, fine-tuning, reconstruction."""
