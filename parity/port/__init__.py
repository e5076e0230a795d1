"""The port API: prove that a Flax NNX port of any PyTorch module computes what the module does.

    from parity import Port, check_port, permute, transpose     # the one door: `parity` exports the API

`declare` (the `Port` and its weight table, checked before anything runs), `arguments` (the port, inputs
and labels every function takes, refused in one line each before anything runs), `transforms` (the steps a table
row applies: exact both ways, but `add`, one-way), `weights` (the two conversions, both models holding the
same parameters and buffers), `trees` (several inputs, structured outputs), `torch_runner` and `flax_runner`
(each framework's side, in eval or train mode), `table` (the table checked against both models: `Declared`),
`check` (`check_port`), `results` (torch's side of a check, one object apart from any comparison),
`errors` (`PortError`), `rows` and `trajectory` (the
comparisons, judged by `parity.compare`, the core the preset suite shares), `report` (the `Report` and its
table), `environment` (the precision settings, threads and versions every report states), `precision` (a failing
float32 row on a GPU or TPU rerun at full matmul precision, said to be TF32 or not); `units`,
`conventions`, `search` and `infer` (`infer_port`: the table proposed from the two models, ambiguities decided
in float64), `reference` (`save_reference`, `check_reference`: torch's results kept in a file, checked
without torch), `coverage` (a likely bug planted in each entry, to prove the checks would catch it), `memory` (a check's
need estimated before it builds anything; streaming mode for a model too large for a float64 copy).
This package exports nothing itself (`parity` does); its modules are named here. Importing the API loads
neither torch nor JAX; running a check does.
"""
