#!/usr/bin/env bash
# The GPU report in one command: parity (TF32 off, and the TF32 rows beside), the cross-device row, the
# accuracy check over seeds, the benchmark, one-epoch wall times and determinism, each writing its
# JSON/PNG/text under OUT, with the wall time of every part in OUT/timings.txt.
#
#   tools/gpu_report.sh OUT                        # every part, on the GPU
#   tools/gpu_report.sh OUT parity bench           # some parts: versions parity accuracy bench epochs determinism
#   DRY_RUN=1 tools/gpu_report.sh OUT              # every part on the CPU at tiny sizes: tests the pipeline
#
# Run from the repository root. PYTHON picks the interpreter (default python3; PYTHONPATH is set to the
# checkout, so the GPU image's python3 runs it without installing anything).
set -uo pipefail

if [ $# -lt 1 ]; then
  echo "usage: tools/gpu_report.sh OUT [versions|parity|accuracy|bench|epochs|determinism ...]" >&2
  exit 2
fi
out=$1
shift
parts=${*:-versions parity accuracy bench epochs determinism}
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" CI=true
mkdir -p "$out" || exit 1

all_presets=lstm,bilstm,rnn,lstm2,lstm2x128,bilstm2x128
if [ "${DRY_RUN:-0}" = 1 ]; then
  device=cpu
  parity_args=(--presets lstm --device cpu --steps 3 --recipe-steps 4 --images 4)
  accuracy_args=(--presets lstm --seeds 1 --runs torch,jax --max-steps 3 --device cpu)
  bench_args=(--presets lstm --steps 3 --reps 1 --device cpu)
  train_args=(--max-steps 3)
  epoch_presets=(lstm)
else
  device=gpu
  parity_args=(--presets "$all_presets" --device auto --tf32)
  accuracy_args=(--presets lstm,bilstm,bilstm2x128 --seeds 5 --runs torch,jax --device gpu)
  bench_args=(--presets "$all_presets" --steps 200 --reps 3 --device gpu --levers "jax: cuDNN LSTM")
  train_args=()
  epoch_presets=(lstm bilstm)
fi

run_part() {  # NAME COMMAND...: run it, log its output, note its wall time and exit code
  local name=$1 began=$SECONDS code
  shift
  "$@" > "$out/$name.txt" 2>&1
  code=$?
  echo "$name: $((SECONDS - began)) s, exit $code" | tee -a "$out/timings.txt"
}

train_both() {  # FOLDER PRESET...: one run of each preset in each framework, on the device
  local folder=$1 preset framework
  shift
  for preset in "$@"; do
    for framework in torch jax; do
      "$python" -m "${framework}_impl.train" --preset "$preset" --device "$device" "${train_args[@]}" \
        --out "$out/$folder/$framework-$preset" --overwrite || return 1
    done
  done
}

determinism() {  # the same command twice, per framework: are the weights the same bytes?
  train_both determinism/first lstm && train_both determinism/second lstm || return 1
  for framework in torch jax; do
    first=$(sha256sum < "$out/determinism/first/$framework-lstm/model.safetensors")
    second=$(sha256sum < "$out/determinism/second/$framework-lstm/model.safetensors")
    if [ "$first" = "$second" ]; then echo "$framework lstm: identical weights"; else echo "$framework lstm: weights differ"; fi
  done
}

for part in $parts; do
  case $part in
    versions) run_part versions "$python" -c "import sys, torch, jax, flax, optax; print(sys.version); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), \
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None); \
print('jax', jax.__version__, jax.devices(), '| flax', flax.__version__, '| optax', optax.__version__)" ;;
    parity) run_part parity "$python" -m parity "${parity_args[@]}" --json "$out/parity.json" --plot "$out/parity-plots" ;;
    accuracy) run_part accuracy "$python" -m parity.accuracy "${accuracy_args[@]}" --work "$out/check6" \
                --json "$out/check6.json" --plot "$out/check6.png" ;;
    bench) run_part bench "$python" -m bench "${bench_args[@]}" --json "$out/bench.json" ;;
    epochs) run_part epochs train_both epochs "${epoch_presets[@]}" ;;
    determinism) run_part determinism determinism ;;
    *) echo "tools/gpu_report.sh: error: unknown part $part (expected versions, parity, accuracy, bench, epochs, determinism)" >&2
       exit 2 ;;
  esac
done
