"""The tutorials' network: a batch-first `nn.RNN`/`nn.LSTM`/`nn.GRU` and a linear head on the last step."""

from __future__ import annotations

import torch
from torch import nn

from common.config import Config

RECURRENT_MODULES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class SequenceClassifier(nn.Module):
    """Rows of an image in, class logits out: `<float>[batch, 28, 28]` -> `<float>[batch, classes]`.

    The attribute names `rnn` and `out` make `state_dict()` the canonical weight format as it is.
    """

    def __init__(self, config: Config):
        super().__init__()
        recurrent = RECURRENT_MODULES[config.cell]
        options = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
        self.rnn = recurrent(config.input_size, config.hidden_size, num_layers=config.num_layers,
                             batch_first=True, bidirectional=config.bidirectional, **options)
        self.out = nn.Linear(config.num_directions * config.hidden_size, config.num_classes)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(rows)  # initial states are zeros; output: [batch, time, directions * hidden]
        return self.out(last_time_step(output))


def last_time_step(output: torch.Tensor) -> torch.Tensor:
    """`output[:, -1, :]`, as the tutorials read it.

    For a bidirectional layer this is [forward state after all 28 rows, backward state after the last row only].
    """
    return output[:, -1, :]


def build_model(config: Config, native_seed: int | None = None) -> SequenceClassifier:
    """The model in the config's dtype, with PyTorch's own initialisers (seeded when `native_seed` is given).

    Identity recurrent init (`recurrent_init="identity"`) sets every gate block of `weight_hh` to I.
    """
    if native_seed is not None:
        torch.manual_seed(native_seed)
    model = SequenceClassifier(config).to(TORCH_DTYPES[config.dtype])
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
