"""Named recipes, one per classic PyTorch tutorial (see the README's presets table)."""

from __future__ import annotations

from common.config import Config
from common.errors import ConfigError

PRESETS: dict[str, Config] = {
    # LSTM(28, 64) + Linear(64, 10); Adam lr 0.01, batch 64, 1 epoch.
    "lstm": Config(cell="lstm", hidden_size=64, learning_rate=0.01, batch_size=64, epochs=1),
    # Bidirectional LSTM(28, 64) + Linear(128, 10): the head sees [forward after row 28, backward after row 28 only].
    "bilstm": Config(cell="lstm", hidden_size=64, bidirectional=True, learning_rate=0.01, batch_size=64, epochs=1),
    # 3-layer tanh RNN, hidden 150, recurrent matrices initialised to the identity; Adam lr 0.001, batch 128, 10 epochs.
    "rnn": Config(
        cell="rnn",
        hidden_size=150,
        num_layers=3,
        recurrent_init="identity",
        learning_rate=0.001,
        batch_size=128,
        epochs=10,
    ),
    # 2-layer LSTM 64; evaluates on the first 2000 test images every 50 steps, as its tutorial prints.
    "lstm2": Config(
        cell="lstm",
        hidden_size=64,
        num_layers=2,
        learning_rate=0.01,
        batch_size=64,
        epochs=1,
        eval_every_steps=50,
        eval_images=2000,
    ),
    "lstm2x128": Config(cell="lstm", hidden_size=128, num_layers=2, learning_rate=0.01, batch_size=100, epochs=2),
    "bilstm2x128": Config(
        cell="lstm",
        hidden_size=128,
        num_layers=2,
        bidirectional=True,
        learning_rate=0.003,
        batch_size=100,
        epochs=2,
    ),
}


def get_preset(name: str) -> Config:
    """The preset called `name`; ConfigError listing the known ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
