"""Checks that the PyTorch and Flax ports compute the same thing, against each other and a NumPy oracle."""
