"""Which architecture a model names: its transformers config (no weights), its load dtype, its positions, and
whether it is a model kvbench can measure (a decoder-only causal LM whose shapes match its name).
Everything here runs before a model loads."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Optional

from bench.config.checks import ConfigError, short
from bench.config.settings import ModelConfig


def arch_config(mc: ModelConfig):
    """The transformers config for a model's shapes (no weights needed)."""
    from transformers import AutoConfig

    if mc.arch:
        arch = dict(mc.arch)
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    if mc.hub_id and Path(mc.hub_id).is_dir():
        return AutoConfig.from_pretrained(mc.hub_id)
    if mc.hub_id:
        return AutoConfig.from_pretrained(mc.hub_id, local_files_only=not hub_reachable())
    raise ConfigError(f"model {mc.name} names neither arch, hub_id nor a local directory")


def planned_dtype(mc: ModelConfig, config) -> str:
    """The dtype a model is built in: mc.dtype (the request or the conf/model file's), else its config's (float32)."""
    dtype = mc.dtype
    if dtype == "auto":
        dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return dtype.removeprefix("torch.")


def max_positions(config) -> Optional[int]:
    c = config.get_text_config(decoder=True)
    return getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)


def hub_reachable(timeout: float = 2.0) -> bool:
    # from_pretrained retries an unreachable hub for ~45 s; one socket probe answers in ~0 s.
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def looks_local(spec: str) -> bool:
    """A hub_id written as a path (absolute, ./, ../, ~, or more than one '/'): a hub id is ORG/NAME."""
    return spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1 or Path(spec).exists()


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.safetensors.index.json", "*.bin.index.json")
# sizes every decoder names one way or another; a value that is not a positive integer builds no model
SHAPES = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
          "vocab_size", "max_position_embeddings", "head_dim", "n_layer", "n_embd", "n_head", "n_positions")


def check_local(mc: ModelConfig, weights: str = "auto", key: str = "model.hub_id") -> None:
    """What the files alone tell, before any library loads: a local model is a directory holding config.json (and
    weights, unless weights=random); a GGUF is PACKAGE:FILE.gguf. ConfigError (one line) otherwise."""
    import importlib.util

    if mc.hub_id and looks_local(mc.hub_id):
        path = Path(mc.hub_id).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{key}={mc.hub_id} is a file, not a directory (a local model is a directory holding "
                              "config.json)")
        if not path.is_dir():
            raise ConfigError(f"{key}={mc.hub_id}: no such directory (a local model is a directory holding config.json)")
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}={mc.hub_id}: the directory has no config.json")
        try:
            fields = json.loads((path / "config.json").read_bytes())
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise ConfigError(f"{key}={mc.hub_id}: its config.json is not a JSON object of config fields ({e})") from None
        if mc.arch and fields.get("model_type") != mc.arch.get("model_type"):
            raise ConfigError(f"{key}={mc.hub_id} holds a {fields.get('model_type')} model, but model={mc.name} is a "
                              f"{mc.arch.get('model_type')}; give a model of its own (model=NAME of conf/model)")
        if weights != "random" and not any(next(path.glob(g), None) for g in WEIGHT_FILES):
            raise ConfigError(f"{key}={mc.hub_id} holds no weights (*.safetensors, *.bin); add weights=random to "
                              "time its shapes with random weights")
    elif mc.hub_id and weights == "real" and not mc.gguf and not cached(mc.hub_id) and not hub_reachable():
        raise ConfigError(f"{key}={mc.hub_id} is not in the local hub cache and the hub is unreachable, and "
                          "weights=real refuses random weights")
    if mc.gguf:
        pkg, colon, fname = mc.gguf.partition(":")
        if not (colon and pkg and fname.endswith(".gguf")):
            raise ConfigError(f"model.gguf={mc.gguf} must be PACKAGE:FILE.gguf (a GGUF file inside an installed "
                              "Python package)")
        try:
            found = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            found = None
        if found is None and weights == "real":  # weights=auto falls back to random weights, and says so
            raise ConfigError(f"model.gguf={mc.gguf}: package {pkg} is not installed, and weights=real refuses "
                              "random weights")
        where = list(found.submodule_search_locations or []) if found else []
        if where and not (Path(where[0]) / fname).is_file():
            raise ConfigError(f"model.gguf={mc.gguf}: package {pkg} holds no {fname}")


def cached(hub_id: str) -> bool:
    """Whether the local hub cache holds a hub id's config and weights (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = lambda name: isinstance(try_to_load_from_cache(hub_id, name), str)  # noqa: E731
        return found("config.json") and any(found(n) for n in (
            "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"))
    except Exception:  # noqa: BLE001 - an id the hub library refuses is not cached either
        return False


def _check_shapes(mc: ModelConfig, config) -> None:
    """Fields a config accepts but the model cannot be built from (found when it loads, too late otherwise)."""
    text = config.get_text_config(decoder=True)

    def where(attr: str) -> str:
        return f"model.arch.{attr}" if attr in mc.arch else f"{attr} of model.hub_id={mc.hub_id}"

    for attr in SHAPES:
        v = getattr(text, attr, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{where(attr)}={v!r} must be a positive integer (model={mc.name})")
    heads, kv = getattr(text, "num_attention_heads", None), getattr(text, "num_key_value_heads", None)
    if isinstance(heads, int) and isinstance(kv, int) and heads % kv:
        raise ConfigError(f"{where('num_key_value_heads')}={kv} must divide num_attention_heads={heads} "
                          f"(model={mc.name}): each key/value head serves a whole group of query heads")
    rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None)
    kind = (rope.get("rope_type") or rope.get("type")) if isinstance(rope, dict) else None
    if kind and kind != "default":
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        if kind not in ROPE_INIT_FUNCTIONS:
            raise ConfigError(f"rope type {kind!r} of model={mc.name} ({'model.arch' if mc.arch else where('rope')}) "
                              f"is not one transformers knows; choose one of: default, {', '.join(ROPE_INIT_FUNCTIONS)}")


def check_model(mc: ModelConfig):
    """The model's config, or ConfigError (one line) when it names no usable causal LM: a local directory that is
    missing or holds no config.json, shapes that build no config, an encoder or encoder-decoder, or a directory whose
    architecture is not the one the model's name stands for."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    key = "model.hub_id"
    check_local(mc, "random")
    try:
        config = arch_config(mc)
    except Exception as e:  # noqa: BLE001 - transformers raises several kinds for a bad field
        what = "model.arch" if mc.arch else key
        raise ConfigError(f"{what} of {mc.name} builds no config: "
                          f"{short((str(e).strip().splitlines() or [repr(e)])[-1], 200)}") from None
    if mc.arch and mc.hub_id and looks_local(mc.hub_id):
        from transformers import AutoConfig

        try:
            found = AutoConfig.from_pretrained(Path(mc.hub_id).expanduser()).model_type
        except Exception as e:  # noqa: BLE001 - a config.json that is not JSON, or not a transformers config
            raise ConfigError(f"{key}={mc.hub_id}: its config.json is not a transformers config "
                              f"({(str(e).strip().splitlines() or [repr(e)])[0]})") from None
        if found != mc.arch.get("model_type"):
            raise ConfigError(f"{key}={mc.hub_id} holds a {found} model, but model={mc.name} is a "
                              f"{mc.arch.get('model_type')}; give a model of its own (model=NAME of conf/model)")
    _check_shapes(mc, config)
    kind = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"model={mc.name} is a {kind} encoder-decoder; kvbench measures decoder-only causal LMs")
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ConfigError(f"model={mc.name} is a {kind} model, not a decoder-only causal LM "
                          "(AutoModelForCausalLM); kvbench measures generate() of causal LMs")
    return config
