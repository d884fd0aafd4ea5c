"""Every causal-LM architecture transformers registers: kv_geometry's prediction == the bytes a real tiny
model's cache holds after generate() (prefill + decode), inside, at and beyond every (shrunk) window, and a
prefill alone beyond it: resident (the storages its tensors keep alive) and held (its tensors as shaped).

Tiny configs come from generic shrinking of `AutoConfig.for_model` (every sub-config, per-layer lists kept
one layer of each kind, windows 8). Architectures that cannot be built tiny or run a plain generate(), or
that kv_geometry refuses with a stated reason, are listed in tests/data/registry_unbuildable.txt; any change
in that set (new failures, or listed ones that now work) fails. Regenerate it with
`KVBENCH_REGEN=1 pytest tests/test_kv_registry.py` (hand-written `unmodelled:` lines, which state why a
model that runs is not predicted, are kept). Mismatches and unlisted geometry failures fail.
`python tests/test_kv_registry.py [model_type ...]` prints one line per architecture.
"""
from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

import pytest
import torch

LISTING = Path(__file__).parent / "data" / "registry_unbuildable.txt"
RUNS = ((3, 3, 1), (8, 2, 1), (20, 1, 1), (20, 4, 2))  # (prompt, new tokens, batch): inside, at, beyond the windows
WINDOW, VOCAB, HIDDEN, HEAD_DIM, INTER = 8, 256, 64, 16, 32
IDS = (8, 100)                           # input ids drawn here: clear of the special ids moved to >= 200

_SET = (  # (tiny value, keys it applies to) in every (sub-)config dict where the key holds a larger int
    (HIDDEN, ("hidden_size", "n_embd", "d_model", "embed_dim", "word_embed_proj_dim", "out_hidden_size", "emb_dim",
             "projection_dim", "n_embed", "model_dim", "text_hidden_size", "vision_embed_dim", "embedding_dim",
             "lru_width", "ple_embed_dim", "hc_lowrank")),
    (4, ("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads", "linear_num_heads",
        "decoder_attention_heads", "num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts",
        "linear_num_value_heads", "num_query_groups", "swa_num_attention_heads")),
    (8, ("mamba_n_heads", "mamba_num_heads", "n_mamba_heads", "state_size", "mamba_d_state", "ssm_state_size",
        "d_state", "time_step_rank", "rotary_dim")),
    (HEAD_DIM, ("head_dim", "attention_head_dim", "kv_channels", "head_size", "d_kv", "d_head", "v_head_dim",
               "kv_lora_rank", "q_lora_rank", "linear_key_head_dim", "linear_value_head_dim", "mamba_d_head",
               "mamba_head_dim", "mamba_headdim", "index_head_dim", "hidden_size_per_layer_input", "linear_head_dim",
               "qk_rope_head_dim", "qk_nope_head_dim", "swa_head_dim")),
    (INTER, ("intermediate_size", "ffn_dim", "n_inner", "d_ff", "d_inner", "ffn_hidden_size", "moe_intermediate_size",
            "shared_expert_intermediate_size", "expert_intermediate_size", "encoder_ffn_dim", "decoder_ffn_dim",
            "shared_intermediate_size", "moe_shared_expert_intermediate_size", "intermediate_size_mlp", "mlp_dim",
            "expert_ffn_hidden_size")),
    (VOCAB, ("vocab_size", "unpadded_vocab_size", "vocab_size_per_layer_input", "encoder_hash_byte_group_vocab")),
    (WINDOW, ("sliding_window", "attention_chunk_size", "attention_window_size", "window_size", "sliding_window_size",
              "keep_window_size")),
    (2, ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "top_k", "num_selected_experts", "moe_k",
        "experts_per_token", "linear_num_key_heads", "index_n_heads", "zero_expert_num")),
    (1, ("n_group", "topk_group", "n_shared_experts", "num_shared_experts", "moe_num_shared_experts", "n_groups",
        "mamba_n_groups", "num_expert_group")),
)
_FILL = {"head_dim": HEAD_DIM, "num_key_value_heads": 4, "num_experts_per_tok": 2, "n_routed_experts": 4}  # None breaks
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num", "swa_num_key_value_heads")
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_decoder_layers",
           "encoder_layers", "num_encoder_layers", "depth", "num_blocks")
_SSM = (("mamba_n_heads", "mamba_d_head", "mamba_expand"), ("num_heads", "head_dim", "expand"),
        ("n_mamba_heads", "mamba_headdim", "mamba_expand"))  # heads * head dim == expand * hidden
_OVERRIDES = {  # default configs without an attention layer: give them one, so the hybrid path is tested
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["mamba", "attention", "mamba"]},
    # Zamba ties its shared attention block across the hybrid layers: it needs two of them
    "zamba": {"num_hidden_layers": 4, "attn_layer_period": 2, "attn_layer_offset": 1,
              "layers_block_type": ["linear_attention", "hybrid", "linear_attention", "hybrid"]},
}
_BASE_KEYS = ("_name_or_path", "output_attentions")  # some sub-configs refuse PretrainedConfig's own keys


def _is_index_list(k: str, v, n: int) -> bool:
    """Layer numbers (Zamba2's hybrid_layer_ids, Llama4's moe_layers), not one property per layer."""
    return (isinstance(v, list) and 0 < len(v) <= n and re.search("ids|idxs|indices|layers", k) is not None
            and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in v) and len(set(v)) == len(v))


def _layer_selection(d: dict, n: int) -> list[int]:
    """Original layer indices to keep: the first of every distinct per-layer signature (the lists of length n),
    at least 3 layers; KV-sharing models keep that many in the sharing and the shared part each."""
    lists = [v for k, v in d.items() if isinstance(v, list) and len(v) == n and n > 3 and not _is_index_list(k, v, n)]
    sig = [tuple(str(v[i]) for v in lists) for i in range(n)]

    def pick(lo: int, hi: int) -> list[int]:
        return sorted({sig.index(s, lo) for s in set(sig[lo:hi])} | set(range(lo, min(hi, lo + 3))))

    shared = d.get("num_kv_shared_layers") or 0
    keep = pick(0, n - shared) + (pick(n - shared, n) if shared else [])
    marked = {v[0] for k, v in d.items() if _is_index_list(k, v, n)}  # one layer each index list names
    return sorted(set(keep) | marked)


def _shrink(d: dict, text: bool) -> dict:
    hidden = d.get("hidden_size") or d.get("d_model") or d.get("n_embd")
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _shrink(v, False) if "model_type" in v or k.endswith("config") else v
            v = {kk: vv for kk, vv in v.items() if kk not in _BASE_KEYS}
        elif v is None and k in _FILL:
            v = _FILL[k]
        elif isinstance(v, int) and not isinstance(v, bool):
            if k == "attention_hidden_size" and hidden and v >= hidden and v % hidden == 0:
                v = HIDDEN * (v // hidden)  # e.g. Zamba2 attends over [hidden, embeddings]
            for target, keys in _SET:
                if k in keys and v > target:
                    v = target
            if k in _KV_HEADS:
                heads = d.get("num_attention_heads") or d.get("n_head") or v
                v = 4 if v >= heads else min(v, 2)
            if (k.endswith("token_id") or k.endswith("token_index")) and v >= VOCAB:
                v = 200 + v % 50
            if k in _LAYERS and not text:
                v = min(v, 1)
            if k.endswith("_period"):
                v = min(v, 2)
            if k.endswith("_offset") and "layer" in k:
                v = min(v, 1)
        elif isinstance(v, list) and (k.endswith("token_id") or k.endswith("token_ids")):
            v = [200 + x % 50 if isinstance(x, int) and x >= VOCAB else x for x in v]
        elif isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v) and any(
                k in keys for _, keys in _SET):  # per-layer sizes (Gemma3n's intermediate_size)
            v = [min(x, next(t for t, keys in _SET if k in keys)) for x in v]
        elif k == "axial_pos_embds_dim":
            v = [HIDDEN // 2, HIDDEN // 2]  # must sum to hidden_size (Reformer)
        elif isinstance(v, list) and "section" in k and all(isinstance(x, int) for x in v) and sum(v) > HEAD_DIM // 2:
            v = _rescale(v, HEAD_DIM // 2)
        out[k] = v
    for heads, dim, expand in _SSM:
        if all(isinstance(out.get(x), int) for x in (heads, dim, expand, "hidden_size")):
            out[heads] = out[expand] * out["hidden_size"] // out[dim]
    if isinstance(out.get("mamba_d_ssm"), int):
        out["mamba_d_ssm"] = out["mamba_n_heads"] * out["mamba_d_head"]
    if isinstance(out.get("qk_head_dim"), int):
        out["qk_head_dim"] = out["qk_nope_head_dim"] + out["qk_rope_head_dim"]
    if all(isinstance(d.get(k), int) for k in ("head_dim", "qk_nope_head_dim", "qk_rope_head_dim")) and \
            d["head_dim"] == d["qk_nope_head_dim"] + d["qk_rope_head_dim"]:  # kept a sum where it was one
        out["head_dim"] = out["qk_nope_head_dim"] + out["qk_rope_head_dim"]
    if isinstance(out.get("attention_head_dim"), int) and isinstance(out.get("attention_hidden_size"), int):
        out["attention_head_dim"] = out["attention_hidden_size"] // out["num_attention_heads"]
    if "is_decoder" in out and text:
        out["is_decoder"] = True  # BERT-family LM heads cache only as decoders; Reformer refuses otherwise
    return out


def _rescale(v: list[int], total: int) -> list[int]:
    out = [max(1, x * total // sum(v)) for x in v]
    out[0] += total - sum(out)
    return out


def _select_layers(td: dict, n: int) -> None:
    """Keep a few layers of the text config dict td in place: per-layer lists, per-layer overrides, counts."""
    keep = _layer_selection(td, n)
    parts = [k for k, v in td.items() if isinstance(v, int) and re.fullmatch(r"n_\w+_layers", k)]
    if len(parts) > 1 and sum(td[k] for k in parts) == n:  # Dory: input + recurrent + output layers
        keep = list(range(len(parts)))
        td.update(dict.fromkeys(parts, 1))
    for k, v in td.items():  # a count that divides n (LongCat: 2 sublayers per layer) keeps the ratio
        if isinstance(v, int) and not isinstance(v, bool) and re.search("num_layers|layers_per", k) and 0 < v < n \
                and n % v == 0:
            r = n // v
            width = -(-len(keep) // r) * r
            keep = sorted(keep + [i for i in range(n) if i not in keep][:width - len(keep)])
            td[k] = len(keep) // r
    for k, v in list(td.items()):
        if _is_index_list(k, v, n):  # renumber the kept ones
            td[k] = [keep.index(i) for i in v if i in keep]
        elif isinstance(v, list) and len(v) == n and n > 3:
            td[k] = [v[i] for i in keep]
        if k == "per_layer_config" and isinstance(v, dict):  # {"05": {...}}: renumber the kept layers
            base = td.get("head_dim") or 1
            td[k] = {f"{keep.index(int(i)):0{len(i)}d}": {kk: (HEAD_DIM * vv // base if kk == "head_dim" else vv)
                                                         for kk, vv in o.items()}
                     for i, o in v.items() if int(i) in keep}
    if td.get("num_kv_shared_layers"):
        td["num_kv_shared_layers"] = len([i for i in keep if i >= n - td["num_kv_shared_layers"]])
    for k in _LAYERS:
        if isinstance(td.get(k), int):
            td[k] = len(keep)


def tiny_config(model_type: str):
    """A tiny fp32 config of model_type: generic shrinking of every (sub-)config, the text config keeping one
    layer of each distinct per-layer kind (layer_types and the like)."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(model_type)
    text = cfg.get_text_config(decoder=True)
    d = cfg.to_dict()
    text_key = next((k for k in getattr(cfg, "sub_configs", {}) or {} if getattr(cfg, k, None) is text), None)
    td = d[text_key] if text_key else d
    n = next((td[k] for k in _LAYERS if isinstance(td.get(k), int)), None)
    if n:
        _select_layers(td, n)
    d = _shrink(d, text_key is None)
    if text_key:
        d[text_key] = _shrink(td, True)
    d.pop("transformers_version", None)
    (d[text_key] if text_key else d).update(_OVERRIDES.get(model_type, {}))
    return type(cfg).from_dict(d)


def _generate(model, prompt: int, new: int, batch: int):
    """The cache a real generate() leaves behind (prefill of `prompt`, then new - 1 decode steps)."""
    g = torch.Generator().manual_seed(prompt)
    ids = torch.randint(*IDS, (batch, prompt), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, return_dict_in_generate=True, pad_token_id=0, use_cache=True)
    for name in ("cache", "past_key_values", "cache_params", "state", "mems"):
        if out.get(name) is not None:
            return out.get(name)
    return None


def check(model_type: str, debug: bool = False) -> str | None:
    """None when prediction == reality at every run; 'category: reason' when it cannot be checked here
    (config / build / generate: the tiny model cannot run; meta / no-cache: kv_geometry refuses, saying why).
    A mismatch, or any other geometry failure on a model that runs, raises AssertionError."""
    from transformers import AutoModelForCausalLM

    from bench.measure.cachebytes import cache_payload
    from bench.predict.geometry import MetaRunError, NoCacheError, kv_geometry

    stage = "config"
    try:
        cfg = tiny_config(model_type)
        stage = "build"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
        stage = "generate"
        payloads = {(p, new, b): cache_payload(_generate(model, p, new, b)) for p, new, b in RUNS}
        real = {k: (c.total_bytes, c.logical_bytes) for k, c in payloads.items()}
    except Exception as e:  # noqa: BLE001
        if debug:
            raise
        return f"{stage}: {type(e).__name__}: {_first_line(e)}"
    try:
        geo = kv_geometry(cfg, torch.float32)
    except (MetaRunError, NoCacheError) as e:  # refusals with a stated reason: listed like the unbuildable
        return f"{'meta' if isinstance(e, MetaRunError) else 'no-cache'}: {_first_line(e)}"
    except Exception as e:
        raise AssertionError(f"{model_type}: geometry failed on a model that runs: {type(e).__name__}: {e}") from e
    got = {k: (geo.bytes(k[0], k[1] - 1, k[2]), geo.held_bytes(k[0], k[1] - 1, k[2])) for k in real}
    assert got == real, f"{model_type}: predicted {got}, real {real}"
    return None if any(r[0] for r in real.values()) else "ok-empty"  # the model caches nothing (openai-gpt): 0 == 0


def _read_listing() -> dict[str, str]:
    if not LISTING.exists():
        return {}
    lines = [ln for ln in LISTING.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return dict(ln.split(": ", 1) for ln in lines)


_HEADER = """# Causal-LM architectures tests/test_kv_registry.py cannot check: `model_type: category: reason`.
# config/build/generate: the generically shrunk tiny model cannot be made or run (often the default config
# itself is broken); meta/no-cache: kv_geometry refuses, and says why; unmodelled: a model that runs, whose
# cache geometry kv_geometry does not represent (it raises GeometryError rather than give a wrong figure).
# Written by KVBENCH_REGEN=1 pytest tests/test_kv_registry.py (unmodelled lines are hand-written and kept;
# lines for types the installed transformers lacks are kept). Reasons are from the version that wrote them.
"""


@pytest.mark.filterwarnings("ignore")
def test_every_registered_architecture_matches_its_real_cache():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    t0 = time.time()
    listed, types = _read_listing(), set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    outcomes, failures, empty = {}, [], []
    for mt in sorted(types):
        try:
            if (r := check(mt)) == "ok-empty":
                empty.append(mt)
            elif r is not None:
                outcomes[mt] = r
        except AssertionError as e:
            if listed.get(mt, "").startswith("unmodelled:"):
                outcomes[mt] = listed[mt]  # a stated reason, kept
            else:
                failures.append(str(e)[:500])
    print(f"{len(types)} architectures, {len(outcomes)} listed, {len(failures)} failed, "
          f"caching nothing: {empty}, {time.time() - t0:.1f} s")
    if os.environ.get("KVBENCH_REGEN"):
        keep = {mt: r for mt, r in listed.items() if mt not in types}
        LISTING.parent.mkdir(exist_ok=True)
        LISTING.write_text(_HEADER + "".join(f"{mt}: {r}\n" for mt, r in sorted({**keep, **outcomes}.items())))
    assert not failures, "\n".join(failures)
    expected = {mt for mt in listed if mt in types}
    assert set(outcomes) == expected, (
        f"newly unbuildable: {sorted(set(outcomes) - expected)}; now buildable: {sorted(expected - set(outcomes))}"
        " (KVBENCH_REGEN=1 rewrites tests/data/registry_unbuildable.txt)")


def _first_line(e: Exception) -> str:
    """The message on one line (a validation error's cause is on its second), at most 200 characters."""
    return re.sub(r"\s+", " ", str(e)).strip()[:200]


if __name__ == "__main__":  # survey: python tests/test_kv_registry.py [model_type ...]
    import sys

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    t0 = time.time()
    for mt in sys.argv[1:] or sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        t = time.time()
        try:
            r = check(mt) or "ok"
        except AssertionError as e:
            r = f"FAIL {e}"
        except Exception as e:  # noqa: BLE001
            r = f"ERROR {type(e).__name__}: {_first_line(e)}"
        print(f"{mt:28s} {time.time() - t:5.2f}s {r[:300]}", flush=True)  # noqa: T201
    print(f"total {time.time() - t0:.1f}s")
