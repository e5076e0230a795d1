"""Ports outside the six presets, each declared with `parity.port.Port` and proven with `parity.prove`."""
