"""The tutorials' network: a batch-first `nn.RNN`/`nn.LSTM`/`nn.GRU` and a linear head on the last step."""

from __future__ import annotations

import torch
from torch import nn

from common.config import Config

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def recurrent_layers(config: Config, input_size: int, num_layers: int) -> nn.RNNBase:
    """The config's `nn.RNN` (tanh), `nn.LSTM` or `nn.GRU`: batch first, `num_layers` stacked."""
    hidden, bidirectional = config.hidden_size, config.bidirectional
    if config.cell == "rnn":
        return nn.RNN(
            input_size,
            hidden,
            num_layers=num_layers,
            nonlinearity="tanh",
            batch_first=True,
            bidirectional=bidirectional,
        )
    if config.cell == "lstm":
        return nn.LSTM(input_size, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)
    return nn.GRU(input_size, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)


class SequenceClassifier(nn.Module):
    """Rows of an image in, class logits out: `<float>[batch, 28, 28]` -> `<float>[batch, classes]`.

    The attribute names `rnn` and `out` make `state_dict()` the canonical weight format as it is.
    """

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.rnn = recurrent_layers(config, config.input_size, config.num_layers)
        self.out = nn.Linear(config.num_directions * config.hidden_size, config.num_classes)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(rows)  # initial states are zeros; output: [batch, time, directions * hidden]
        return self.out(last_time_step(output))

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """`self(rows)`: the whole model, as the tutorial computes it. (jax_impl's `logits` leaves out the steps
        of a bidirectional model's last backward direction that the head never reads; `nn.LSTM` runs them.)"""
        return self(rows)

    @torch.no_grad()
    def layer_outputs(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output sequence `<float>[batch, time, directions * hidden]` (h of each step).

        A stacked `nn.LSTM` returns only its last layer's, so each layer runs alone here: a one-layer
        module of the same kind holding that layer's parameters (the same library kernel).
        """
        config, outputs, sequence = self.config, [], rows
        for layer in range(config.num_layers):
            single = recurrent_layers(config, sequence.shape[-1], 1).to(device=rows.device, dtype=rows.dtype)
            parameters = dict(self.rnn.named_parameters())
            single.load_state_dict(
                {
                    f"{kind}_l0{direction}": parameters[f"{kind}_l{layer}{direction}"]
                    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                    for direction in ["", "_reverse"][: config.num_directions]
                }
            )
            sequence = single(sequence)[0]
            outputs.append(sequence)
        return outputs


def last_time_step(output: torch.Tensor) -> torch.Tensor:
    """`output[:, -1, :]`, as the tutorials read it.

    For a bidirectional layer this is [forward state after all 28 rows, backward state after the last row only].
    """
    return output[:, -1, :]


def build_model(config: Config, native_seed: int = 0) -> SequenceClassifier:
    """The model in the config's dtype, with PyTorch's own initialisers drawn from seed `native_seed`.

    The draw uses a forked RNG, so building a model leaves torch's global random state as it was.
    Identity recurrent init (`recurrent_init="identity"`) sets every gate block of `weight_hh` to I.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(native_seed)
        model = SequenceClassifier(config).to(DTYPES[config.dtype])
    if config.recurrent_init == "identity":
        with torch.no_grad():
            for name, parameter in model.rnn.named_parameters():
                if name.startswith("weight_hh"):
                    eye = torch.eye(config.hidden_size, dtype=parameter.dtype)
                    parameter.copy_(eye.repeat(config.gates, 1))
    return model


@torch.no_grad()
def logits_in_batches(model: nn.Module, rows: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Logits of every row sequence in `rows` (`<float>[n, 28, 28]`, on the model's device), in eval mode."""
    model.eval()
    return torch.cat([model(rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)])
