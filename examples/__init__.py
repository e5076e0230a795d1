"""Ports outside the six presets, each declared with `parity.Port` and proven with `parity.check_port`."""
