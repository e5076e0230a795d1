"""The Flax NNX side: Flax's recurrent cells under `nnx.RNN`/`nnx.Bidirectional`, a linear head on the last step."""
