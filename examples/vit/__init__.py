"""Hugging Face's `ViTForImageClassification` (from `transformers`, a small config, no download) and a Flax NNX
port of it written here, on MNIST images as 16 patches of 7x7 pixels."""
