"""Hugging Face's `GPT2LMHeadModel` (from `transformers`, a small config, no download) and a Flax NNX port of it
written here: a language model over MNIST images read as 48 tokens of pooled, quantised pixels."""
