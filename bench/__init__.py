"""The benchmark, `python -m bench`: training and evaluation throughput of the tutorials' loop and both trainers.

`runners` times them round-robin, `levers` names the trainer options tried against the defaults,
`bound` gives the FLOP count and the matmul bound, `sweep` the batch and hidden size sweeps.
Nothing in `parity` imports this package.
"""
