"""What ran inside a timed call: log messages, dynamo's compiles and graph breaks, the SDPA kernels dispatched.

`compile_counts` is read by the worker's watcher thread while a cell warms up, so a recompile storm can be named
when its budget ends it (bench.run.worker).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

from bench.measure import clock


@contextlib.contextmanager
def logged(logger: str, level: int = logging.WARNING):
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
def quiet_stderr():
    """File descriptor 2 to /dev/null while the block runs (for C++ code that prints on its own)."""
    import os
    import sys

    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def compile_watch():
    """What torch.compile met while the block ran: graph breaks (dynamo's own counter) and hits of its
    recompile limit (dynamo's warning; past it, the frame runs uncompiled). A cell that generate compiled
    but that shows either ran partly eager: its timings are not those of a whole compiled graph."""
    from torch._dynamo.utils import counters

    seen = {"graph_breaks": 0, "recompile_limit_hits": 0}
    before = sum(counters["graph_break"].values())
    try:
        with logged("torch._dynamo") as warnings:
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
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    stopped = []

    def stop(n: int) -> None:
        if n > steps and not stopped:
            stopped.append(n)
            with quiet_stderr():
                prof.stop()

    with quiet_stderr():  # the profiler prints start/stop lines of its own on the C level
        prof.start()
    clock.on_token = stop
    try:
        run()
    finally:
        clock.on_token = None
        if not stopped:
            with quiet_stderr():
                prof.stop()
    seen = set()
    for ev in prof.events():
        name = ev.name.removeprefix("aten::")
        if name in SDPA_OPS:
            seen.add(SDPA_OPS[name])
    return ",".join(sorted(seen))


_CUDAGRAPH_RECORDS = [0]


def count_cudagraph_records() -> None:
    """Count every CUDA graph inductor records (a storm re-records one per new shape); call once per process.
    Only where CUDA is: importing inductor costs a CPU worker seconds, and no graph is recorded without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return
    try:
        from torch._inductor import cudagraph_trees as trees
    except ImportError:
        return
    record = trees.CUDAGraphTreeManager.record_function
    if getattr(record, "_kvbench_counted", False):
        return

    def counted(self, *args, **kwargs):
        _CUDAGRAPH_RECORDS[0] += 1
        return record(self, *args, **kwargs)

    counted._kvbench_counted = True
    trees.CUDAGraphTreeManager.record_function = counted


def compile_counts() -> dict:
    """Graphs dynamo compiled and CUDA graphs recorded so far in this process."""
    import sys

    if "torch._dynamo" not in sys.modules:  # nothing compiled, and no import of dynamo (seconds) to say so
        return {"graphs": 0, "cudagraphs": _CUDAGRAPH_RECORDS[0]}
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "cudagraphs": _CUDAGRAPH_RECORDS[0]}
