"""Typed run configuration: each setting has one home, and the dataclass that holds it checks it.

conf/config.yaml gives the defaults, the conf/ groups give a model, a cache strategy and an attention
path, and `bench.cli.compose` turns Hydra's composed dict into these dataclasses. Checks run in
`__post_init__`, before any model loads, and raise ConfigError with one line (exit code 2). The cache
strategy's settings live in its own class (bench/strategies/); the top-level `nbits`, `quant_backend` and
`sdpa_backend` are spellings of those group settings, resolved once by bench.cli.compose.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional

from bench.config import checks
from bench.config.checks import ConfigError

ATTNS = ("eager", "sdpa", "flash_attention_2", "flex_attention")
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
COMPILE = ("auto", "off")
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")
WEIGHTS = ("auto", "real", "random")
QUALITY = ("auto", "on", "off")
NO_GPU = ("device=cuda but torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
          "use device=cpu or device=auto")

__all__ = ["ATTNS", "SDPA_BACKENDS", "ConfigError", "ModelConfig", "AttnConfig", "RunConfig", "field_names"]


def field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass
class ModelConfig:
    name: str = "gpt2"
    hub_id: Optional[str] = None        # hub id, or a local directory holding config.json + weights
    gguf: Optional[str] = None          # "package:file.gguf" shipped inside an installed Python package
    dtype: str = "auto"                 # the model's own load dtype (top-level dtype= overrides it)
    arch: Dict[str, Any] = field(default_factory=dict)  # config.json fields: the shapes, for random weights offline

    def __post_init__(self) -> None:
        checks.text("model.name", self.name)
        checks.one_of("dtype", self.dtype, DTYPES)
        for k in ("hub_id", "gguf"):
            if getattr(self, k) is not None:
                checks.text(f"model.{k}", getattr(self, k))
        if not isinstance(self.arch, dict):
            raise ConfigError(f"model.arch must be a mapping of config.json fields, not {self.arch!r}")
        if self.arch and "model_type" not in self.arch:
            raise ConfigError(f"model.arch of {self.name} needs model_type (e.g. llama, gpt2)")
        if not (self.hub_id or self.gguf or self.arch):
            raise ConfigError(f"model {self.name} names neither hub_id, gguf nor arch; a model needs one of them")


@dataclass
class AttnConfig:
    name: str = "sdpa"
    sdpa_backend: str = "auto"          # attn=sdpa only: auto lets PyTorch pick; flash, efficient, cudnn, math pin it

    def __post_init__(self) -> None:
        checks.one_of("attn", self.name, ATTNS)
        checks.one_of("sdpa_backend", self.sdpa_backend, SDPA_BACKENDS)
        if self.name != "sdpa" and self.sdpa_backend != "auto":
            raise ConfigError(f"sdpa_backend={self.sdpa_backend} applies to attn=sdpa only, not attn={self.name}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    cache: Any = None                   # a Strategy (bench/strategies/), built from conf/cache/<name>.yaml
    attn: AttnConfig = field(default_factory=AttnConfig)
    weights: str = "auto"               # auto: real if loadable, else random; real: fail without weights
    batch: int = 1
    prompt_len: int = 128
    new_tokens: int = 128
    warmup: int = 1
    repeats: Any = "auto"               # auto: until the median is known to `precision`; or a fixed count
    precision: float = 0.01             # repeats=auto: target half-width of the median's 95% interval, relative
    max_repeats: int = 50               # repeats=auto: at most this many timed calls
    cell_budget_s: float = 30.0         # repeats=auto: seconds of timed calls a cell may take, shared by its rounds
    rounds: int = 3                     # worker processes that time each cell, interleaved over the sweep's cells
    budget_s: Optional[float] = None    # a sweep's wall-time budget: race the cells (first pass, then contenders)
    compile_budget_s: float = 60.0      # with isolate: a cell's warm-up (compile included) may take this long
    threads: Any = "auto"               # torch intra-op threads in the worker: auto (torch's choice) or a count
    process_warmup_s: float = 0.0       # untimed generate() calls when a worker has loaded its model, before any cell
    gpus: Optional[str] = None          # all, or GPU indices (0,1): one worker per GPU, cells spread over them
    device: str = "auto"
    device_map: Optional[str] = None    # 'auto': accelerate spreads a too-large model over GPUs (real weights)
    compile: str = "auto"               # auto: what transformers does (compiles static caches on GPU); off
    compile_mode: str = "auto"          # with compile=auto: torch.compile mode of that compile (auto: transformers')
    seed: int = 0
    store: str = "results"
    quality: str = "auto"               # auto: ppl + greedy agreement when weights are real; on; off
    resume: bool = False                # skip cells the store already holds as ok/unavailable
    isolate: bool = True                # run cells in a worker process: a crash costs one cell
    cell_timeout_s: Optional[float] = None  # with isolate: kill a cell running longer than this (loading not counted)
    fit_check: bool = True              # refuse, before loading, a cell the planner says cannot fit
    # spellings of group settings, resolved into the groups by bench.cli.compose (None: not given)
    nbits: Optional[int] = None         # cache.nbits
    quant_backend: Optional[str] = None  # cache.quant_backend
    sdpa_backend: Optional[str] = None  # attn.sdpa_backend
    dtype: Optional[str] = None         # model.dtype

    def __post_init__(self) -> None:
        checks.one_of("weights", self.weights, WEIGHTS)
        if self.weights == "real" and not (self.model.hub_id or self.model.gguf):
            raise ConfigError(f"weights=real but model={self.model.name} names no weights to load (no hub_id or gguf, "
                              "only its shapes); use weights=auto or random, or give model.hub_id=DIR_OR_HUB_ID")
        for k in ("batch", "prompt_len", "new_tokens"):
            checks.integer(k, getattr(self, k), 1)
        if self.new_tokens < 2:
            raise ConfigError(f"new_tokens={self.new_tokens} must be at least 2 (one prefill token plus decode steps)")
        checks.integer("warmup", self.warmup, 0)
        if self.repeats != "auto":
            try:
                checks.integer("repeats", self.repeats, 1)
            except ConfigError:
                raise ConfigError(f"repeats={self.repeats} must be auto or a positive integer") from None
        checks.number("precision", self.precision, 0, 1)
        checks.integer("max_repeats", self.max_repeats, 1)
        checks.number("cell_budget_s", self.cell_budget_s, 0)
        checks.integer("rounds", self.rounds, 1)
        if self.budget_s is not None:
            checks.number("budget_s", self.budget_s, 0)
        checks.number("compile_budget_s", self.compile_budget_s, 0)
        checks.number("process_warmup_s", self.process_warmup_s, 0, open_low=False)
        if self.threads != "auto":
            try:
                checks.integer("threads", self.threads, 1)
            except ConfigError:
                raise ConfigError(f"threads={self.threads} must be auto or a positive integer") from None
        if self.gpus is not None:
            self.gpus = str(self.gpus)  # gpus=0 reads as an int
            if not re.fullmatch(r"all|\d+(,\d+)*", self.gpus) or len(set(self.gpus.split(","))) != len(self.gpus.split(",")):
                raise ConfigError(f"gpus={self.gpus} must be all or distinct GPU indices such as 0,1")
            if self.device == "cpu":
                raise ConfigError(f"gpus={self.gpus} contradicts device=cpu; drop one of them")
        checks.one_of("device", self.device, DEVICES)
        if self.device_map is not None:
            checks.one_of("device_map", self.device_map, ("auto",))
            if self.device == "cpu":
                raise ConfigError("device_map=auto spreads a model over GPUs; it contradicts device=cpu; drop one of them")
        checks.one_of("compile", self.compile, COMPILE)
        checks.one_of("compile_mode", self.compile_mode, COMPILE_MODES)
        if self.compile == "off" and self.compile_mode != "auto":
            raise ConfigError(f"compile_mode={self.compile_mode} contradicts compile=off; give one of them")
        checks.integer("seed", self.seed, 0)
        checks.text("store", self.store)
        checks.one_of("quality", self.quality, QUALITY)
        if self.quality == "on" and self.weights == "random":
            raise ConfigError("quality=on needs real weights, but weights=random has none to score; drop one of them")
        for k in ("resume", "isolate", "fit_check"):
            checks.boolean(k, getattr(self, k))
        if self.cell_timeout_s is not None:
            checks.number("cell_timeout_s", self.cell_timeout_s, 0)

    def check_positions(self, max_positions: Optional[int]) -> None:
        """prompt_len + new_tokens must fit the architecture's positions (known once its config is)."""
        if max_positions and self.prompt_len + self.new_tokens > max_positions:
            raise ConfigError(
                f"prompt_len + new_tokens = {self.prompt_len + self.new_tokens} exceeds {self.model.name}'s "
                f"{max_positions} positions; keep the sum at most {max_positions}")
