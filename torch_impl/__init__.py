"""The PyTorch side: `nn.RNN`/`nn.LSTM`/`nn.GRU` + `nn.Linear`, whose state_dict is the canonical format."""
