#!/usr/bin/env bash
# The H100 runs behind the committed GPU results, as run through the device tool.
#
#   bash scripts/gpu_session.sh start [STAGE...]  # install the carried wheels (.whl/), then run the stages
#                                            # (all, or those named) detached: the work goes on between calls
#   bash scripts/gpu_session.sh collect 540  # wait up to 540 s (or until all stages are done), then pack
#                                            # results/ and logs/ so far into $OUT/kvgpu.tgz
#   bash scripts/gpu_session.sh stages [STAGE...]  # the same in the foreground (any CUDA machine)
#
# Stages run in priority order: whatever the device time allows, the most important rows exist.
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
  # issue 4.1: the headline at batch 1 (cache vs none, eager and sdpa, 1000 new tokens)
  run headline-b1 sweep=headline batch=1
  # issue 2: the default sweep's cells that failed or crashed on the first H100 run, and a repeat of
  # the ones that worked (does a second run agree?)
  run gpt2-paged-offst -m model=gpt2 cache=paged,offloaded_static attn=eager,sdpa cell_timeout_s=180
  run gpt2-offst-nocompile -m model=gpt2 cache=offloaded_static compile=off attn=eager,sdpa
  run gpt2-repeat -m model=gpt2 cache=none,dynamic,static attn=eager,sdpa
  stage overhead python3 scripts/overhead_check.py model=gpt2 cache=dynamic device=cuda
  # issue 4.3: 7B shapes, every strategy (sdpa), then the batch a quantized cache makes room for
  run llama7b-sdpa sweep=llama7b attn=sdpa
  run llama7b-batch sweep=llama7b_batch
  run llama7b-qbatch sweep=llama7b_batch cache=quantized,quantized_int2,quantized_hqq  # the quantized half alone
  # the headline at batch 8: where the cache's advantage should appear
  run headline-b8 sweep=headline batch=8 attn=sdpa,eager
  # flash-attn: fp16 gpt2 and bf16 Llama-2-7B
  run gpt2-fp16 -m model=gpt2 dtype=float16 cache=dynamic,static,paged attn=sdpa,flash_attention_2
  run llama7b-fa2 sweep=llama7b cache=dynamic,static,paged,quantized attn=flash_attention_2
  # repeats: gpt2-repeat again in a separate process on the same machine, and 7B cells of session 2
  run gpt2-repeat-b -m model=gpt2 cache=none,dynamic,static attn=eager,sdpa
  run llama7b-repeat sweep=llama7b cache=none,dynamic,static attn=sdpa
  # 4096-token prompts (Llama-3-8B shapes)
  run llama8b-4096 sweep=llama7b_long cache=none,dynamic,static,quantized,paged,offloaded attn=sdpa
  # --- session 5: every paged cell again, now that each timed call prefills its prompt (until then the
  # persistent manager's prefix cache served the repeats' prompts from the warmup call) ---
  run llama7b-paged sweep=llama7b cache=paged attn=sdpa,flash_attention_2
  run llama8b-4096-paged sweep=llama7b_long cache=paged attn=sdpa,flash_attention_2
  run gpt2-paged -m model=gpt2 cache=paged attn=eager,sdpa
  run gpt2-fp16-paged -m model=gpt2 dtype=float16 cache=paged attn=sdpa,flash_attention_2
  # the serving case paged is for: batch 32 and 96 under flash-attn, against dynamic, allocator unfragmented
  stage llama7b-batch-fa2 env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    python3 -m bench run sweep=llama7b_batch batch=32,96 cache=dynamic,paged attn=flash_attention_2 store="$STORE"
  # --- session 7: the other attention paths at 4096 tokens, and the remaining caches at the large batches
  run llama8b-4096-attn sweep=llama7b_long cache=dynamic,static attn=eager,flex_attention
  run llama7b-batch-rest sweep=llama7b_batch cache=offloaded,static
  # --- session 4 (session 3's budget ended inside llama8b-4096) ---
  # the rest of the 4096-token sdpa row set, offloaded_static without compile (with it the worker segfaults)
  run llama8b-4096-rest sweep=llama7b_long cache=offloaded,quantized_int2,quantized_hqq attn=sdpa
  run llama8b-4096-offst sweep=llama7b_long cache=offloaded_static compile=off attn=sdpa
  # paged with flash-attn at 256-token blocks (session 3 used 32: flash-attn refused), and static+fa2 again,
  # now that rows count graph breaks and recompile-limit hits
  run fa2-paged-static -m model=gpt2 dtype=float16 cache=paged,static attn=flash_attention_2
  run llama7b-fa2-paged-static sweep=llama7b cache=paged,static attn=flash_attention_2
  # does bf16 fit batch 96 once the allocator cannot fragment? (rows record cuda_alloc_conf)
  stage llama7b-b96-expandable env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    python3 -m bench run sweep=llama7b_batch cache=dynamic batch=96 store="$STORE"
  # launch-bound repeats: the same cells twice, each process pinned to two cores (is host scheduling the noise?)
  for rep in a b; do
    stage "gpt2-pinned-$rep" taskset -c 2-3 python3 -m bench run -m model=gpt2 cache=none,dynamic attn=eager,sdpa store="$STORE"
  done
  run llama8b-4096-fa2 sweep=llama7b_long cache=dynamic,static attn=flash_attention_2
  # 7B: the other attention paths, and offloaded_static without compile
  run llama7b-attn sweep=llama7b cache=dynamic,static attn=eager,flex_attention
  run llama7b-offst-nocompile sweep=llama7b cache=offloaded_static compile=off attn=sdpa
  # the fp16 SDPA cold start at 1000 tokens
  run gpt2-fp16-1000 -m model=gpt2 dtype=float16 prompt_len=8 new_tokens=1000 repeats=2 cache=dynamic attn=sdpa,eager
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
    cat "$W/stages.log"; tail -n 3 "$W"/logs/*.log | grep -v "^$" | tail -n 60
    nvidia-smi --query-gpu=memory.used --format=csv,noheader
    tar czf "${OUT:-/tmp/out}/kvgpu.tgz" -C "$W" results logs stages.log
    [ -e "$W/done" ] && echo ALL-DONE ;;
  stages) shift; ONLY="$*"; stages ;;
  *) echo "usage: $0 start|collect SECONDS|stages" >&2; exit 2 ;;
esac
