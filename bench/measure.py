"""Timing and memory of generate() calls, done so the numbers can be trusted.

- The clock marks the call's start, every new token and the end. On CUDA the marks are CUDA
  events on the stream; generate() already copies each new token to the host (a sync), so the
  streamer adds no synchronisation of its own.
- Exactly `new_tokens` are produced (min_new_tokens == max_new_tokens) and the count is checked.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

MIB = 1024 * 1024


class ShortGeneration(RuntimeError):
    pass


class Clock:
    """Timestamps in ms. CUDA events on GPU (read after one final synchronize), host clock on CPU."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def elapsed_ms(self) -> list[float]:
        """Milliseconds of every mark after the first, relative to the first."""
        if self.cuda:
            torch.cuda.synchronize()
            return [self.marks[0].elapsed_time(m) for m in self.marks[1:]]
        return [(m - self.marks[0]) * 1e3 for m in self.marks[1:]]


# Called with the count of new tokens after each one arrives (sdpa_backends_seen stops its profiler early).
_on_token: Optional[Callable[[int], None]] = None


class TokenMarks:
    """A generate() streamer that only marks the clock when each new token arrives.

    generate() calls put() once with the prompt, then once per new token."""

    def __init__(self, clock: Clock):
        self.clock, self.calls = clock, 0

    def put(self, value) -> None:
        self.calls += 1
        if self.calls > 1:  # the first put is the prompt
            self.clock.mark()
            if _on_token is not None:
                _on_token(self.calls - 1)

    def end(self) -> None:
        pass


@dataclass
class Timing:
    e2e_ms: float
    ttft_ms: float
    step_ms: list[float]       # duration of each decode step (len new_tokens - 1)
    produced: int              # new tokens per sequence actually generated

    @property
    def tpot_ms(self) -> float:
        return (self.e2e_ms - self.ttft_ms) / max(len(self.step_ms), 1)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def pad_id(model) -> int:
    """A single pad id: the config's, else the (first) eos id, else 0. Several eos ids come as a list."""
    gc = model.generation_config
    pid = gc.pad_token_id if gc.pad_token_id is not None else gc.eos_token_id
    if isinstance(pid, (list, tuple)):
        pid = pid[0] if pid else None
    return 0 if pid is None else int(pid)


def time_generate(model, input_ids, new_tokens: int, kwargs: dict, device: str) -> tuple[Timing, object]:
    """One generate() call, timed. Returns the timing and generate's output."""
    clock = Clock(device)
    marks = TokenMarks(clock)
    sync(device)
    clock.mark()
    out = model.generate(
        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, do_sample=False, streamer=marks, return_dict_in_generate=True,
        pad_token_id=pad_id(model), **kwargs)
    clock.mark()
    t = clock.elapsed_ms()  # [token 1, token 2, ..., token n, end]
    produced = out.sequences.shape[1] - input_ids.shape[1]
    if produced != new_tokens or len(t) != new_tokens + 1:
        raise ShortGeneration(f"asked for {new_tokens} new tokens, generate produced {produced}")
    tokens = t[:-1]
    return Timing(e2e_ms=t[-1], ttft_ms=tokens[0], step_ms=list(np.diff(tokens)), produced=produced), out


def time_generate_batch(model, input_ids, new_tokens: int, kwargs: dict, device: str) -> tuple[Timing, object]:
    """The paged path: continuous batching via generate_batch, timed from its per-token timestamps.

    Continuous batching ignores min_new_tokens, so EOS is disabled (eos_token_id=-1) to force the
    length. The block pool is sized to this workload (transformers' default takes ~90% of free memory).
    Block sharing (prefix caching) is off: the manager persists across warmup and repeats, which send the same
    prompts, so with it every timed call after the first skipped most of its prefill (a TTFT far too short)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    batch, prompt_len = input_ids.shape
    block = kwargs["block_size"]  # tokens per block (conf/cache/paged.yaml)
    blocks_per_seq = -(-(prompt_len + new_tokens) // block)
    cb_cfg = ContinuousBatchingConfig(block_size=block, num_blocks=batch * blocks_per_seq,
                                      max_batch_tokens=batch * prompt_len, allow_block_sharing=False)
    gen_cfg = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    inputs = input_ids.tolist()
    sync(device)
    t0 = time.perf_counter()
    # its generation loop runs in a thread that logs a failure instead of raising it: keep what it says
    with _logged("ContinuousBatchingLogger", logging.ERROR) as errors:
        out = model.generate_batch(inputs=inputs, generation_config=gen_cfg, continuous_batching_config=cb_cfg,
                                   record_timestamps=True, persistent_manager=True, warmup=False)
    results = list(out.values())
    produced = min((len(r.generated_tokens) for r in results), default=0)
    if produced != new_tokens or len(results) != batch:
        why = f"; its thread logged: {errors[0].splitlines()[0]}" if errors else ""
        raise ShortGeneration(f"asked for {batch} x {new_tokens} new tokens, continuous batching produced "
                              f"{len(results)} x {produced}{why}")
    # Per position: the slowest sequence of the batch decides when that token is out for all.
    stamps = np.array([r.timestamps[:new_tokens] for r in results]).max(axis=0)
    tokens = (stamps - t0) * 1e3
    # generate_batch then stops its thread and collects garbage (~0.5 s): the call ends at its last token
    e2e = float(tokens[-1])
    return Timing(e2e_ms=e2e, ttft_ms=float(tokens[0]), step_ms=list(np.diff(tokens)), produced=produced), out


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarise(timings: list[Timing], batch: int) -> dict:
    """Median and p10/p90 over repeats; per-step medians by position."""
    e2e = [t.e2e_ms for t in timings]
    ttft = [t.ttft_ms for t in timings]
    tpot = [t.tpot_ms for t in timings]
    n = timings[0].produced
    out = {}
    for name, vals in (("e2e", e2e), ("ttft", ttft), ("tpot", tpot)):
        out[f"{name}_ms"] = pct(vals, 50)
        out[f"{name}_p10_ms"] = pct(vals, 10)
        out[f"{name}_p90_ms"] = pct(vals, 90)
    decode = [(t.e2e_ms - t.ttft_ms) for t in timings]
    out["decode_tok_s"] = batch * (n - 1) / (pct(decode, 50) / 1e3)
    out["e2e_tok_s"] = batch * n / (out["e2e_ms"] / 1e3)
    out["step_ms"] = [round(v, 4) for v in np.median(np.array([t.step_ms for t in timings]), axis=0).tolist()]
    return out


# ---- memory ----

def model_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:  # tied embeddings count once
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        # Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS.
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass


def peak_bytes(device: str) -> tuple[int, Optional[int]]:
    """(peak, reserved) since reset_peak: CUDA allocator figures, or the process peak RSS."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) * 1024, None
    except (OSError, AttributeError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, None


def launch_us(device: str, window_s: float = 0.05) -> float:
    """Host time to issue one tiny op, in microseconds (on CUDA: one kernel launch; the GPU finishes each
    faster than the host issues the next). A batch-1 decode step of a small model is made of such launches,
    so this is the host speed behind its time, taken in the cell's own process: the mean over a 50 ms window
    after a warm-up, so time the host spends on other work inside the window counts."""
    x = torch.zeros(16, device=device)
    for _ in range(100):  # warm-up: allocator, dispatcher, first launch
        x.add_(1)
    sync(device)
    ops, t = 0, time.perf_counter()
    while time.perf_counter() - t < window_s:
        for _ in range(100):
            x.add_(1)
        ops += 100
    sync(device)
    return (time.perf_counter() - t) / ops * 1e6


@functools.lru_cache(maxsize=None)
def copy_bandwidth_gb_s(device: str) -> float:
    """Device memory bandwidth from a large copy (bytes read + written per second), median of 10."""
    n = (1 << 30) if device == "cuda" else (1 << 28)
    src = torch.empty(n, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(12):
        sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n / float(np.median(times[2:])) / 1e9


# ---- what ran ----

@contextlib.contextmanager
def _logged(logger: str, level: int = logging.WARNING):
    """The messages `logger` and its children emit at `level` or above while the block runs."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    keep, log = Keep(level), logging.getLogger(logger)
    log.addHandler(keep)
    try:
        yield messages
    finally:
        log.removeHandler(keep)


@contextlib.contextmanager
def compile_watch():
    """What torch.compile met while the block ran: graph breaks (dynamo's own counter) and hits of its
    recompile limit (dynamo's warning; past it, the frame runs uncompiled). A cell that generate compiled
    but that shows either ran partly eager: its timings are not those of a whole compiled graph."""
    from torch._dynamo.utils import counters

    seen = {"graph_breaks": 0, "recompile_limit_hits": 0}
    before = sum(counters["graph_break"].values())
    try:
        with _logged("torch._dynamo") as warnings:
            yield seen
    finally:
        seen["graph_breaks"] = sum(counters["graph_break"].values()) - before
        seen["recompile_limit_hits"] = sum(m.startswith("torch._dynamo hit config.") and "recompile_limit" in m
                                           for m in warnings)


SDPA_OPS = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)",
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}


def sdpa_backends_seen(run: Callable[[], object], steps: int = 4) -> str:
    """Name the SDPA kernels PyTorch dispatched to in `run` (a time_generate call): the prefill and the
    first `steps` decode steps run under the profiler, which then stops. The call keeps the cell's exact
    shapes (a shorter one would resize a static cache and recompile); profiling all of a 1000-token
    call cost minutes."""
    global _on_token
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    stopped = []

    def stop(n: int) -> None:
        if n > steps and not stopped:
            stopped.append(n)
            prof.stop()

    prof.start()
    _on_token = stop
    try:
        run()
    finally:
        _on_token = None
        if not stopped:
            prof.stop()
    seen = set()
    for ev in prof.events():
        name = ev.name.removeprefix("aten::")
        if name in SDPA_OPS:
            seen.add(SDPA_OPS[name])
    return ",".join(sorted(seen))
