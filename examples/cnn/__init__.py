"""A small CNN on MNIST: PyTorch (NCHW, OIHW kernels) and its Flax NNX port (NHWC, HWIO kernels)."""
