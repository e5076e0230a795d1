"""`nn.LSTM` (2 layers, bidirectional) ported onto Flax's stock `nnx.RNN` / `nnx.Bidirectional` / `nnx.LSTMCell`."""
