"""A small Transformer encoder classifier reading the 28 rows of an image as 28 tokens, in PyTorch and Flax NNX."""
