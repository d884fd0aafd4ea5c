#!/usr/bin/env bash
# The GPU runs behind the committed H200 results, as run through the device tool (results/logs/h200-*).
#
#   bash scripts/gpu_session.sh start [STAGE...]  # install the carried wheels (.whl/), then run the stages
#                                                 # (all, or those named) detached: the work goes on between calls
#   bash scripts/gpu_session.sh collect 540       # wait up to 540 s (or until all stages are done), then pack
#                                                 # results/ and logs/ so far into $OUT/kvgpu.tgz
#   bash scripts/gpu_session.sh stages [STAGE...] # the same in the foreground (any CUDA machine)
#
# Session 1 ran `start` (all stages, in this order); session 2 named its stages, most needed first:
#   start static-a static-b batch batch-offloaded aa-1 aa-2 ref-7b-rest ref-7b-none ref-7b-b32 ref-8b ref-8b-none headline
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

L7="model=llama-2-7b prompt_len=1024"

stages() {
  mkdir -p "$W/logs" "$STORE"
  python3 -m bench env >"$W/logs/env.log" 2>&1
  # smoke: every path a session relies on, small and fast, so a broken one shows in the first minute
  run smoke -m model=gpt2 dtype=float16 prompt_len=128 new_tokens=16 repeats=2 \
    cache=dynamic,static,paged,quantized_fp8 attn=sdpa,flash_attention_2
  # issue 14: the compiled static cache on Llama-2-7B shapes, 1024 + 128, defaults, in two separate processes
  for p in a b; do run "static-$p" $L7 new_tokens=128 cache=static; done
  # issue 16: fp8 beside int4 and int2 (and the bf16 reference) at batch 1
  run fp8-b1 -m $L7 new_tokens=64 cache=dynamic,quantized,quantized_int2,quantized_fp8 cell_budget_s=15
  # issue 16: the large batches, each cache, the default allocator: peaks against the planner, and real OOMs
  run batch -m $L7 new_tokens=16 batch=32,96,160 cache=dynamic,quantized,quantized_int2,quantized_fp8,static,paged \
    fit_check=false repeats=2 cell_timeout_s=300
  run batch-offloaded -m $L7 new_tokens=16 batch=32,96 cache=offloaded fit_check=false repeats=2 cell_timeout_s=300
  # an A/A pair on the GPU: the same small sweep twice, for the noise floor
  for p in 1 2; do
    run "aa-$p" -m model=gpt2 prompt_len=128 new_tokens=64 batch=1,8 cache=none,dynamic,static,quantized,paged \
      cell_budget_s=5
  done
  # the reference report's decision cells (results/h100-report.md), re-measured on this GPU
  run ref-7b -m $L7 new_tokens=64 cache=paged,static,dynamic,none attn=sdpa,flash_attention_2 cell_budget_s=15
  run ref-7b-rest -m $L7 new_tokens=64 cache=dynamic,static,none attn=flash_attention_2 cell_budget_s=10
  run ref-7b-none $L7 new_tokens=64 cache=none attn=sdpa cell_budget_s=10
  stage ref-7b-b32 env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python3 -m bench run -m $L7 new_tokens=16 \
    batch=32 cache=dynamic,paged attn=flash_attention_2 repeats=3 store="$STORE"
  run ref-8b -m model=llama-3-8b prompt_len=4096 new_tokens=64 cache=paged,static,dynamic \
    attn=sdpa,flash_attention_2 cell_budget_s=10
  run ref-8b-none model=llama-3-8b prompt_len=4096 new_tokens=64 cache=none attn=sdpa repeats=2
  # the classic headline: gpt2, 8 + 1000 tokens, cache against none, batch 1 and 8
  run headline sweep=headline attn=sdpa repeats=2
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
  *) echo "usage: $0 start|collect SECONDS|stages" >&2; exit 2 ;;
esac
