#!/usr/bin/env bash
# The GPU runs behind the committed H200 results, as run through the device tool (results/logs/h200-*).
#
#   bash scripts/gpu_session.sh start [STAGE...]  # install the carried wheels (.whl/), then run the stages
#                                                 # (all, or those named) detached: the work goes on between calls
#   bash scripts/gpu_session.sh collect 540       # wait up to 540 s (or until all stages are done), then pack
#                                                 # results/ and logs/ so far into $OUT/kvgpu.tgz
#   bash scripts/gpu_session.sh stages [STAGE...] # the same in the foreground (any CUDA machine)
#
# Earlier sessions' stages are in git history (results/logs/h200-s1-*, h200-s2-*); session 3 (issues 21 and 23) runs
#   start smoke sweep7b aa-1 aa-2 boundary offload remedies remedies-mode
# Stages run in this file's order: whatever the device time allows, the most important rows exist. Every cell
# uses random weights of the named shapes (the GPU machine reaches no model hub).
set -uo pipefail
W=${KVGPU_DIR:-/tmp/kvgpu}
STORE=$W/results
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/site:$PWD

ONLY=""  # stage names to run ("" = all)
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

stage() {  # stage NAME COMMAND...: one command with its own log; a failing stage never stops the next
  local name=$1; shift
  want "$name" || return 0
  echo "=== $name start $(date +%T)" >>"$W/stages.log"
  "$@" >"$W/logs/$name.log" 2>&1
  echo "=== $name rc=$? end $(date +%T)" >>"$W/stages.log"
}

run() { local name=$1; shift; stage "$name" python3 -m bench run "$@" store="$STORE"; }

stages() {
  mkdir -p "$W/logs" "$STORE"
  python3 -m bench env >"$W/logs/env.log" 2>&1
  # smoke: every path a session relies on, small and fast, so a broken one shows in the first minute; it also
  # builds quanto's CUDA extension once for the machine (torch_extensions cache), as any first use there would
  run smoke -m model=gpt2 dtype=float16 prompt_len=128 new_tokens=16 repeats=2 rounds=1 \
    cache=dynamic,paged,quantized,quantized_fp8 attn=sdpa,flash_attention_2
  # issue 21: the whole 7B sweep within its budget, timed from the command to its last answer (model builds included)
  stage sweep7b bash -c "s=\$(date +%s); python3 -m bench run sweep=llama7b store=$STORE; echo WALL_S=\$(( \$(date +%s) - s ))"
  # issue 21: an A/A pair on the GPU (20 cells, no compile), judged by bench compare on measured reproducibility
  for p in 1 2; do
    KVBENCH_RUN_ID=h200-aa-$p run "aa-$p" -m model=gpt2 prompt_len=128 new_tokens=32 batch=1,8 \
      cache=none,dynamic,quantized,quantized_int2,paged attn=sdpa,eager rounds=3 cell_budget_s=1.5
  done
  # issue 23: the planner's largest batch at its boundary, run and +10% (bisected if the two disagree)
  stage boundary python3 scripts/boundary.py store="$STORE" budget_s=270 dynamic=154 int4=457
  # issue 23: what offloading holds in host memory (the batch-96 SIGKILL)
  stage offload python3 scripts/offload_host_probe.py
  # issue 21: the known remedies for a recompile storm (static + flash_attention_2), measured
  run remedies model=llama-2-7b prompt_len=1024 new_tokens=64 cache=static attn=flash_attention_2 rounds=1 \
    compile=off max_repeats=3 cell_budget_s=5
  run remedies-mode model=llama-2-7b prompt_len=1024 new_tokens=64 cache=static attn=flash_attention_2 rounds=1 \
    compile_mode=max-autotune-no-cudagraphs max_repeats=3 cell_budget_s=5 compile_budget_s=180
  touch "$W/done"
}

case ${1:-} in
  start)
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    mkdir -p "$W/logs"
    shift
    setsid nohup bash "$0" stages "$@" >"$W/logs/driver.log" 2>&1 < /dev/null &
    sleep 2; echo "started; stages log: $W/stages.log" ;;
  collect)
    end=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt "$end" ] && [ ! -e "$W/done" ]; do sleep 5; done
    cat "$W/stages.log"; tail -n 4 "$W"/logs/*.log | grep -v "^$" | cut -c1-300 | tail -n 80
    nvidia-smi --query-gpu=memory.used --format=csv,noheader
    tar czf "${OUT:-/tmp/out}/kvgpu.tgz" -C "$W" results logs stages.log
    [ -e "$W/done" ] && echo ALL-DONE ;;
  stages) shift; ONLY="$*"; stages ;;
  stop)  # end the detached stages and their cells (a restart after a fix)
    pkill -f "gpu_session.sh stages"; pkill -f -- "-m bench"; sleep 3; pkill -9 -f -- "-m bench"; true ;;
  prebuild)  # quanto's CUDA extension, built once for the machine with no compile budget (~80 s)
    python3 -m bench run model=gpt2 dtype=float16 prompt_len=128 new_tokens=16 repeats=2 rounds=1 cache=quantized \
      compile_budget_s=900 store="$STORE" 2>&1 | tail -2 ;;
  *) echo "usage: $0 start|collect SECONDS|stages|stop|prebuild" >&2; exit 2 ;;
esac
