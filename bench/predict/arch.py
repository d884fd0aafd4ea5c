"""Which architecture a model names: its transformers config (no weights), its load dtype, its positions, and
whether it is a model kvbench can measure (a decoder-only causal LM whose shapes match its name).
Everything here runs before a model loads."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional

from bench.config.checks import ConfigError
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


def check_model(mc: ModelConfig):
    """The model's config, or ConfigError (one line) when it names no usable causal LM: a local directory that is
    missing or holds no config.json, shapes that build no config, an encoder or encoder-decoder, or a directory whose
    architecture is not the one the model's name stands for."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    key = "model.hub_id"
    if mc.hub_id and looks_local(mc.hub_id):
        path = Path(mc.hub_id).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{key}={mc.hub_id}: no such directory (a local model is a directory holding config.json)")
        if not (path / "config.json").is_file():
            raise ConfigError(f"{key}={mc.hub_id}: the directory has no config.json")
    try:
        config = arch_config(mc)
    except Exception as e:  # noqa: BLE001 - transformers raises several kinds for a bad field
        what = "model.arch" if mc.arch else key
        raise ConfigError(f"{what} of {mc.name} builds no config: {(str(e).strip().splitlines() or [repr(e)])[-1]}") from None
    if mc.arch and mc.hub_id and looks_local(mc.hub_id):
        from transformers import AutoConfig

        found = AutoConfig.from_pretrained(Path(mc.hub_id).expanduser()).model_type
        if found != mc.arch.get("model_type"):
            raise ConfigError(f"{key}={mc.hub_id} holds a {found} model, but model={mc.name} is a "
                              f"{mc.arch.get('model_type')}; give a model of its own (model=NAME of conf/model)")
    kind = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(f"model={mc.name} is a {kind} encoder-decoder; kvbench measures decoder-only causal LMs")
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ConfigError(f"model={mc.name} is a {kind} model, not a decoder-only causal LM "
                          "(AutoModelForCausalLM); kvbench measures generate() of causal LMs")
    return config
