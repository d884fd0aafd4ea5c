"""Timing and memory of generate() calls, done so the numbers can be trusted.

- The clock marks the call's start, every new token and the end. On CUDA the marks are CUDA
  events on the stream; generate() already copies each new token to the host (a sync), so the
  streamer adds no synchronisation of its own.
- Exactly `new_tokens` are produced (min_new_tokens == max_new_tokens) and the count is checked.
Strategies with a timed path of their own (paged) build their Timing from the same pieces.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

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
on_token: Optional[Callable[[int], None]] = None


class TokenMarks:
    """A generate() streamer that only marks the clock when each new token arrives.

    generate() calls put() once with the prompt, then once per new token."""

    def __init__(self, clock: Clock):
        self.clock, self.calls = clock, 0

    def put(self, value) -> None:
        self.calls += 1
        if self.calls > 1:  # the first put is the prompt
            self.clock.mark()
            if on_token is not None:
                on_token(self.calls - 1)

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


def now_ms() -> float:
    """The host clock in ms (continuous batching stamps its tokens with the same perf_counter)."""
    return time.perf_counter() * 1e3


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
