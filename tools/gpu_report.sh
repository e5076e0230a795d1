#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2317,SC2015  # *_args/*_flags/*_presets are word lists; functions run via bash -c
# The GPU report as one budgeted run: its parts in priority order, each under a time cap, every part's
# output packed into OUT/report.tar.gz beside OUT/summary.txt (each part's wall time, cap and exit code).
#
#   tools/gpu_report.sh OUT                          # every part on the GPU, within 420 s
#   tools/gpu_report.sh OUT --budget 480             # within 480 s
#   tools/gpu_report.sh OUT parity bench             # some parts, in the order below
#   DRY_RUN=1 tools/gpu_report.sh OUT --budget 300   # every part on the CPU at tiny sizes: tests the pipeline
#   CAP_parity=200 tools/gpu_report.sh OUT           # one part's cap in seconds instead of its share
#
# Parts, in priority order, each capped at its share of the budget (percent) and at what is left of it:
#   versions (5)     Python, torch, CUDA, cuDNN, the GPU, jax and its devices, flax, optax
#   parity (40)      python -m parity on the GPU only, every preset, TF32 off, plus the --tf32 rows and
#                    the cross-device row (torch and JAX on CPU and GPU, and NumPy)
#   epochs (15)      one epoch of lstm and bilstm in both trainers, and in JAX with the cuDNN lever
#   bench (15)       python -m bench on the GPU, every preset, with the cuDNN lever
#   determinism (8)  lstm once more in each trainer: the same weights as the epochs part's, byte for byte?
#   accuracy (rest)  check 6 on the GPU with whatever is left: lstm first, then bilstm, seeds added one by one
# A part cut at its cap keeps what it finished: parity and bench rewrite their JSON after each preset,
# every training has its own folder, and check 6's JSON is rewritten after each seed. Packing is kept
# 10 s of the budget (a tenth of a budget under 100 s). Exit 0 when every part ran and exited 0, else 1
# (summary.txt says which).
#
# Run from the repository root. PYTHON picks the interpreter (default python3; PYTHONPATH is set to the
# checkout, so the GPU image's python3 runs it without installing anything). WHEELS=DIR installs the
# wheels in DIR (the tested flax and optax, say) into a private folder put first on PYTHONPATH.
set -uo pipefail

all_parts=(versions parity epochs bench determinism accuracy)
declare -A share=([versions]=5 [parity]=40 [epochs]=15 [bench]=15 [determinism]=8 [accuracy]=100)
usage="usage: tools/gpu_report.sh OUT [--budget SECONDS] [${all_parts[*]// /|} ...]"
fail() { echo "tools/gpu_report.sh: error: $*" >&2; exit 2; }

[ $# -ge 1 ] && [[ $1 != -* ]] || { echo "$usage" >&2; exit 2; }
out=$1
shift
budget=420
wanted=()
while [ $# -gt 0 ]; do
  case $1 in
    --budget) [ $# -ge 2 ] || fail "--budget: expected whole seconds"; budget=$2; shift 2 ;;
    --budget=*) budget=${1#--budget=}; shift ;;
    -*) fail "unknown flag $1 (expected --budget SECONDS)" ;;
    *) [ -n "${share[$1]+x}" ] || fail "unknown part $1 (expected ${all_parts[*]})"; wanted+=("$1"); shift ;;
  esac
done
[[ $budget =~ ^[0-9]+$ ]] && [ "$budget" -ge 5 ] || fail "--budget: expected whole seconds, at least 5, got $budget"
for part in "${!share[@]}"; do
  cap_var=CAP_$part
  [ -z "${!cap_var:-}" ] || [[ ${!cap_var} =~ ^[0-9]+$ ]] || fail "$cap_var: expected whole seconds, got ${!cap_var}"
done
parts=()
for part in "${all_parts[@]}"; do  # the priority order, whatever order they were named in
  if [ ${#wanted[@]} -eq 0 ] || [[ " ${wanted[*]} " == *" $part "* ]]; then parts+=("$part"); fi
done
if [ -e "$out/report.tar.gz" ] || [ -e "$out/report" ]; then fail "$out already holds a report; choose another OUT"; fi
mkdir -p "$out/report" || fail "cannot make $out/report"
work=$(cd "$out/report" && pwd)

export CI=true PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$WHEELS"/*.whl \
    || fail "WHEELS: cannot install the wheels in $WHEELS"
  export PYTHONPATH="$site:$PYTHONPATH"
fi

all_presets=lstm,bilstm,rnn,lstm2,lstm2x128,bilstm2x128
if [ "${DRY_RUN:-0}" = 1 ]; then
  device=cpu
  parity_args="--presets lstm --device cpu --steps 3 --recipe-steps 4 --images 4"
  bench_args="--presets lstm --steps 3 --reps 1 --device cpu"
  train_flags="--max-steps 3"
  epoch_presets="lstm"
  jax_lever="jax: unroll 2"  # the cuDNN lever runs on a GPU only: the dry run proves the command with another
  accuracy_presets="lstm"
  accuracy_flags="--max-steps 3"
  max_seeds=2
else
  device=gpu
  parity_args="--presets $all_presets --device gpu --tf32"
  bench_args="--presets $all_presets --steps 100 --reps 3 --device gpu"
  train_flags=""
  epoch_presets="lstm bilstm"
  jax_lever="jax: cuDNN LSTM"
  accuracy_presets="lstm bilstm"
  accuracy_flags=""
  max_seeds=5
fi
export python device train_flags jax_lever work

train_one() {  # FOLDER FRAMEWORK PRESET: one run of the trainer's own command on the device
  local folder=$1 framework=$2 preset=$3
  "$python" -m "${framework}_impl.train" --preset "$preset" --device "$device" $train_flags \
    --out "$work/$folder/$framework-$preset"
}

epochs() {  # PRESET...: both trainers, then JAX with the lever; every run in a folder of its own
  local preset framework
  for preset in "$@"; do
    for framework in torch jax; do
      echo "== $framework $preset" && train_one epochs "$framework" "$preset" || return 1
    done
    echo "== jax $preset with the lever $jax_lever"
    "$python" -m bench.epoch --lever "$jax_lever" --preset "$preset" --device "$device" $train_flags \
      --out "$work/epochs/jax-lever-$preset" || return 1
  done
}

determinism() {  # lstm once more in each trainer, the same command as the epochs part's first run
  local framework first second
  for framework in torch jax; do
    if [ ! -f "$work/epochs/$framework-lstm/model.safetensors" ]; then
      train_one epochs "$framework" lstm > /dev/null || return 1
    fi
    train_one determinism "$framework" lstm > /dev/null || return 1
    first=$(sha256sum < "$work/epochs/$framework-lstm/model.safetensors")
    second=$(sha256sum < "$work/determinism/$framework-lstm/model.safetensors")
    if [ "$first" = "$second" ]; then
      echo "$framework lstm: identical weights"
    else
      echo "$framework lstm: weights differ"
      "$python" -c "import sys; from safetensors.numpy import load_file; import numpy as np; \
a, b = (load_file(path) for path in sys.argv[1:]); \
print('  ' + '; '.join(f'{k}: max |diff| {np.abs(a[k].astype(float) - b[k]).max():.3g}' for k in a))" \
        "$work/epochs/$framework-lstm/model.safetensors" "$work/determinism/$framework-lstm/model.safetensors"
    fi
  done
}
export -f train_one epochs determinism

began=$SECONDS
reserve=$((budget / 10 < 10 ? budget / 10 : 10))  # for packing: 10 s, less of a short budget
left() { echo $((budget - reserve - (SECONDS - began))); }
failed=0
summary="$work/summary.txt"
{
  echo "gpu_report: budget $budget s, device $device$([ "${DRY_RUN:-0}" = 1 ] && echo " (DRY_RUN=1: tiny sizes)"), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$summary"

run_part() {  # NAME CAP LOG COMMAND...: run it under its cap, append its line to the summary; 0 if it exited 0
  local name=$1 cap=$2 log=$3 start=$SECONDS code verdict
  shift 3
  if [ "$cap" -lt 1 ]; then
    echo "$name: not run, the budget is spent" >> "$summary"
    return 1
  fi
  echo "== $name (cap $cap s)" >> "$work/$log.txt"
  timeout --kill-after=5 "$cap" "$@" >> "$work/$log.txt" 2>&1
  code=$?
  case $code in
    0) verdict="" ;;
    124 | 137) verdict=" (cut at its cap)" ;;
    *) verdict=" (failed)" ;;
  esac
  echo "$name: $((SECONDS - start)) s of a $cap s cap, exit $code$verdict" >> "$summary"
  return "$code"
}

cap_of() {  # PART: its share of the budget, or CAP_PART, and never more than is left (0 under 3 s)
  local cap_var=CAP_$1 cap remaining
  cap=${!cap_var:-$((budget * ${share[$1]} / 100))}
  remaining=$(left)
  [ "$remaining" -ge 3 ] || remaining=0
  [ "$cap" -le "$remaining" ] || cap=$remaining
  echo "$cap"
}

for part in "${parts[@]}"; do
  case $part in
    versions) run_part versions "$(cap_of versions)" versions "$python" -c "import sys, torch, jax, flax, optax; \
print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), \
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None); \
print('jax', jax.__version__, jax.devices(), '| flax', flax.__version__, '| optax', optax.__version__)" || failed=1 ;;
    parity) run_part parity "$(cap_of parity)" parity "$python" -m parity $parity_args \
              --json "$work/parity.json" --plot "$work/parity-plots" || failed=1 ;;
    epochs) run_part epochs "$(cap_of epochs)" epochs bash -c 'epochs "$@"' _ $epoch_presets || failed=1 ;;
    bench) run_part bench "$(cap_of bench)" bench "$python" -m bench $bench_args --levers "$jax_lever" \
             --json "$work/bench.json" || failed=1 ;;
    determinism) run_part determinism "$(cap_of determinism)" determinism bash -c determinism || failed=1 ;;
    accuracy)  # whatever is left: running out of it is how this part ends, not a failure
      for preset in $accuracy_presets; do
        for ((seeds = 1; seeds <= max_seeds; seeds++)); do  # each call reuses the runs already finished
          cap=$(cap_of accuracy)
          [ "$cap" -ge 1 ] || { echo "accuracy: stopped before $preset seed $((seeds - 1)), the budget is spent" >> "$summary"; break 2; }
                run_part "accuracy $preset seeds 0-$((seeds - 1))" "$cap" accuracy "$python" -m parity.accuracy \
            --presets "$preset" --seeds "$seeds" --runs torch,jax --device "$device" $accuracy_flags \
            --work "$work/check6" --json "$work/check6-$preset.json" --plot "$work/check6-$preset.png" --overwrite
          code=$?
          [ "$code" -eq 0 ] || { [ "$code" -eq 124 ] || [ "$code" -eq 137 ] || failed=1; break 2; }
        done
      done ;;
  esac
done

echo "total: $((SECONDS - began)) s of a $budget s budget" >> "$summary"
cp "$summary" "$out/summary.txt"
# Weights and checkpoints stay out (bilstm's are megabytes each, and a file back from the GPU machine
# may hold 16 MiB); every run's config.json, metrics.jsonl and summary.json go in.
tar -czf "$out/report.tar.gz" --exclude='*.safetensors' -C "$out" report && rm -rf "$out/report" \
  || { echo "packing failed" >> "$out/summary.txt"; exit 1; }
cat "$out/summary.txt"
exit "$failed"
