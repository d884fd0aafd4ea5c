#!/usr/bin/env bash
# What ran on the H100 for the committed results (device tool; $OUT comes back).
# Usage: bash scripts/gpu_session.sh STEP...   steps: setup sweep user overhead
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for step in "$@"; do
  case $step in
    setup)
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
      export PYTHONPATH=/tmp/site:$PWD
      python3 -m bench env ;;
    sweep)   # the default sweep for gpt2 (random weights: no hub here)
      python3 -m bench run sweep=default model=gpt2 store="$OUT/results" 2>&1 | grep -v "^\[20" | tee -a "$OUT/sweep.log" ;;
    user)    # the README's second user command, as typed
      python3 -m bench run cache=quantized nbits=4 store="$OUT/results" 2>&1 | tail -5 | tee -a "$OUT/user.log" ;;
    overhead)
      python3 scripts/overhead_check.py model=gpt2 cache=dynamic repeats=5 2>&1 | tail -30 | tee "$OUT/overhead.json.log" ;;
  esac
done
