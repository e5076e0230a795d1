"""Framework-free core shared by `torch_impl` and `jax_impl`: config, presets, data, weights.

Nothing in this package imports torch, jax or tensorflow (a test checks it).
"""
