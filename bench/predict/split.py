"""A model split over several GPUs with device_map="auto": the memory each GPU needs, planned on the meta device.

The split is transformers' own: its `_get_device_map` (accelerate's balanced memory, then infer_auto_device_map,
never splitting a decoder layer) run on the meta model with each GPU's memory less the CUDA context. Per GPU:
the weights of the modules placed there; the KV of its decoder layers (the strategy's device bytes, shared out
by the geometry's per-layer bytes); the activations where they run (a layer's forward runs on the GPU holding the
layer, so every GPU with decoder layers pays the prefill's and the last step's transients, and the GPU holding
lm_head pays the logits); one cuBLAS workspace and the CUDA context each. Modules that fit no GPU land on "cpu"
(accelerate then streams their weights in per forward).
"""
from __future__ import annotations

import re
from unittest import mock

GIB = 2**30
HOST = 1 << 50  # the host's memory as the split sees it: room for whatever does not fit the GPUs


def device_map(config, dtype, gpus: int, gpu_bytes: int) -> dict[str, object]:
    """module name -> device (0..gpus-1, "cpu"), as transformers computes it for device_map="auto" with these GPUs."""
    from transformers.integrations import accelerate as hf_accelerate

    from bench.config.dtypes import torch_dtype
    from bench.predict.metarun import meta_model
    from bench.predict.planner import CONTEXT_BYTES

    model = meta_model(config, torch_dtype(dtype))
    budget = {i: max(gpu_bytes - CONTEXT_BYTES, 0) for i in range(gpus)} | {"cpu": HOST}
    # accelerate's get_max_memory keeps only the devices this machine has: plan for the GPUs asked about instead
    with mock.patch.object(hf_accelerate, "accelerate_max_memory", lambda mm: dict(mm)):
        return dict(hf_accelerate._get_device_map(model, "auto", budget, None))


def place(name: str, dmap: dict):
    """The device of a parameter or module name under a device map (its longest prefix there)."""
    best = max((k for k in dmap if k == "" or name == k or name.startswith(k + ".")), key=len, default=None)
    return None if best is None else dmap[best]


def split_plan(config, dtype, strategy, batch: int, prompt_len: int, new_tokens: int, gpus: int,
               gpu_bytes: int, attn: str = "sdpa") -> list[dict]:
    """Per device of the split (GPUs in order, then "cpu" if anything spills): bytes of weights, KV, activations,
    the peak allocated, what the device needs (context included) and whether that fits gpu_bytes."""
    from bench.predict import activations, geometry, planner
    from bench.predict.explain import ranges
    from bench.predict.metarun import meta_model
    from bench.config.dtypes import torch_dtype

    dmap = device_map(config, dtype, gpus, gpu_bytes)
    model = meta_model(config, torch_dtype(dtype))
    weights: dict = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:  # tied weights once, at their first name
        dev = place(name, dmap)
        weights[dev] = weights.get(dev, 0) + t.numel() * t.element_size()
    geo = geometry.kv_geometry(config, dtype)
    layer_dev = _layer_devices(model, dmap, len(geo.layers))
    total = sum(g.bytes(prompt_len, new_tokens - 1, batch) for g in geo.layers) or 1
    kv_all = strategy.predicted_device_bytes(geo, prompt_len, new_tokens, batch) or 0.0
    pre = activations.prefill_peak_bytes(config, dtype, batch, prompt_len, attn)
    dec = activations.decode_peak_bytes(config, dtype, batch, prompt_len + new_tokens - 1, attn)
    head = place(_head_name(model), dmap)
    out = []
    for dev in [*range(gpus), "cpu"]:
        mine = [g for g, d in zip(geo.layers, layer_dev) if d == dev]
        if dev == "cpu" and not weights.get("cpu"):
            continue
        share = sum(g.bytes(prompt_len, new_tokens - 1, batch) for g in mine) / total
        kv = kv_all * share
        runs = bool(mine) or weights.get(dev, 0) > 0
        logits = pre.logits_bytes if dev == head else 0
        pre_act = (pre.peak_bytes - pre.kv_bytes - pre.logits_bytes + logits) if runs else 0
        dec_act = (dec.peak_bytes - dec.kv_bytes - dec.logits_bytes + logits) if runs else 0
        act = max(pre_act, dec_act)
        peak = weights.get(dev, 0) + kv + act + (planner.WORKSPACE_BYTES if runs else 0)
        need = peak + planner.CONTEXT_BYTES
        out.append({"device": dev, "layers": ranges([g.index for g in mine]), "weights_bytes": weights.get(dev, 0),
                    "kv_bytes": kv, "activation_bytes": act, "peak_bytes": peak, "needed_bytes": need,
                    "fits": dev == "cpu" or need <= gpu_bytes})
    return out


def _head_name(model) -> str:
    head = model.get_output_embeddings()
    return next((n for n, m in model.named_modules() if m is head), "lm_head")


def _layer_devices(model, dmap: dict, n: int) -> list:
    """The device of each cache layer's decoder layer (the n-th module list entry named *.layers.<i>)."""
    found: dict[int, object] = {}
    for name, _ in model.named_modules():
        m = re.fullmatch(r"(.*\.)?layers\.(\d+)", name)
        if m and int(m.group(2)) not in found:
            found[int(m.group(2))] = place(name, dmap)
    return [found.get(i) for i in range(n)]
