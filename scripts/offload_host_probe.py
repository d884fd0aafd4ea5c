"""Why was cache=offloaded at batch 96 killed (SIGKILL) on the H200? A probe of the pinned host memory it holds.

    python scripts/offload_host_probe.py            # on a CUDA machine; about 20-40 s

The hypothesis (bench.strategies.offloaded): every offloaded layer's K and V go to the host through
`tensor.to("cpu", non_blocking=True)`, which takes pinned memory from torch's caching host allocator; each block is
rounded up to a power of two, kept after it is freed, and reused only for requests of the same rounded size. At
Llama-2-7B shapes one layer's K is 256 MiB at batch 32 and 1024 tokens (exactly 2^28), 512 MiB blocks from 1025
tokens on, and 1 GiB blocks at batch 96: the batch-32 cell leaves ~49.5 GiB of pinned blocks the batch-96 cell
cannot use, which then needs ~66 GiB more, in one worker process, on a 128 GiB host.

The probe runs transformers' own DynamicCache(offloading=True) updates, as generate() calls them, on 2 layers of
Llama-2-7B shapes (bf16, 1024 + 15 decode steps), batch 32 then batch 96 in one process (as kvbench's worker ran the
cells), and prints after each: the host allocator's bytes (torch.cuda.host_memory_stats), VmRSS / VmHWM / VmPin,
the prediction for 2 layers, and the prediction for all 32; then it empties the host cache, where torch can, and
shows what that returns. The hypothesis holds if the measured pinned bytes match the 2-layer predictions (batch 96
adding its blocks to batch 32's) and 32 layers' worth exceeds what the host (or its cgroup) allows.
"""
from __future__ import annotations

import gc
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB = 2**30


def status() -> str:
    text = Path("/proc/self/status").read_text()
    got = {k: int(v) * 1024 / GIB for k, v in re.findall(r"^(VmRSS|VmHWM|VmPin|VmLck):\s+(\d+) kB", text, re.M)}
    return ", ".join(f"{k} {v:.2f} GiB" for k, v in got.items())


def pinned() -> str:
    import torch

    if not hasattr(torch.cuda, "host_memory_stats"):
        return "host_memory_stats: not in this torch"
    s = torch.cuda.host_memory_stats()
    keys = ("allocated_bytes.current", "allocated_bytes.peak", "active_bytes.current", "num_host_alloc")
    return ", ".join(f"{k} {s.get(k, 0) / (GIB if 'bytes' in k else 1):.2f}" for k in keys)


def main() -> int:
    import torch
    import transformers
    from transformers import DynamicCache, LlamaConfig

    from bench.predict.geometry import kv_geometry
    from bench.predict.host import host_memory
    from bench.strategies.offloaded import Offloaded

    t0 = time.time()
    mem = host_memory()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}")
    print(f"host: {Path('/proc/meminfo').read_text().splitlines()[0]}; this process may use "
          f"{mem.total / GIB:.1f} GiB, {mem.available / GIB:.1f} available now (cgroup-aware)")
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.peak", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if Path(f).exists():
            print(f"  {f}: {Path(f).read_text().strip()}")
    torch.zeros(1, device="cuda")
    print(f"CUDA up: {status()}; {pinned()}")
    arch = dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008)
    two, full = (LlamaConfig(num_hidden_layers=n, **arch) for n in (2, 32))
    strategy = Offloaded()
    prompt, steps = 1024, 15  # new_tokens=16: generate() feeds 15 tokens back
    for batch in (32, 96):
        cache = DynamicCache(config=two, offloading=True)
        k = torch.randn(batch, 32, prompt, 128, dtype=torch.bfloat16, device="cuda")
        for layer in range(2):
            cache.update(k, k.clone(), layer)
        del k
        one = torch.randn(batch, 32, 1, 128, dtype=torch.bfloat16, device="cuda")
        for _ in range(steps):
            for layer in range(2):
                cache.update(one, one.clone(), layer)
        torch.cuda.synchronize()
        del cache, one
        gc.collect()
        want2 = strategy.predicted_host_bytes(kv_geometry(two, "bfloat16"), prompt, steps + 1, batch) / GIB
        want32 = strategy.predicted_host_bytes(kv_geometry(full, "bfloat16"), prompt, steps + 1, batch) / GIB
        print(f"after batch {batch} (2 layers): {pinned()}; {status()}")
        print(f"  predicted pinned blocks of this cell: 2 layers {want2:.2f} GiB, 32 layers {want32:.2f} GiB "
              f"[{time.time() - t0:.0f} s]", flush=True)
    empty = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None) or getattr(torch._C, "_host_emptyCache", None)
    if empty is None:
        print("no host-cache emptying call in this torch")
    else:
        empty()
        print(f"after {getattr(empty, '__name__', 'empty_host_cache')}(): {pinned()}; {status()}")
    b32 = strategy.predicted_host_bytes(kv_geometry(full, "bfloat16"), prompt, steps + 1, 32)
    b96 = strategy.predicted_host_bytes(kv_geometry(full, "bfloat16"), prompt, steps + 1, 96)
    print(f"32 layers, batch 32 then 96 in one worker: {(b32 + b96) / GIB:.1f} GiB pinned beside the process "
          f"(fresh worker at 96: {b96 / GIB:.1f}); this host lets the process have {mem.total / GIB:.1f} GiB "
          f"[{time.time() - t0:.0f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
