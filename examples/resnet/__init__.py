"""A small ResNet (two BasicBlocks with BatchNorm, a strided shortcut) ported to Flax NNX, in eval and train mode."""
