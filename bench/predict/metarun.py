"""Runs an architecture's own code on the meta device as generate() runs it: no weights, no memory, exact shapes.

`meta_model` (AutoModelForCausalLM on meta, memoized), `GenerateLoop` (generate()'s own steps), `MetaSafe`
(data-dependent code on meta), `MetaKernels` (fused GPU kernels' footprints). A cache's tensors are read with
bench.measure.cachebytes, the one walker.
bench.predict.geometry (KV bytes) and bench.predict.activations (activation peaks) both run on it."""
from __future__ import annotations

import copy
import inspect

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_MODELS: dict[tuple, torch.nn.Module] = {}


class MetaSafe(TorchDispatchMode):
    """Lets data-dependent code run on meta. A scalar read of an `all` result is True, any other 0 / False
    (`any` finds nothing: no padding, no inf); `nonzero` finds every element; a copy to the CPU is zeros.
    Shapes stay right for cache and activation sizes; values are moot."""

    _SCALAR = {"_local_scalar_dense", "item", "is_nonzero"}

    def __enter__(self):
        import torch.fx.experimental._config as fx_config

        self._patch = fx_config.patch(meta_nonzero_assume_all_nonzero=True)  # inside decompositions too
        self._patch.__enter__()
        self._true: set[int] = set()
        return super().__enter__()

    def __exit__(self, *exc):
        self._patch.__exit__(*exc)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        meta = bool(args) and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta"
        name = func._overloadpacket.__name__
        if meta and name in self._SCALAR:
            if args[0].dtype == torch.bool:
                return args[0].untyped_storage()._cdata in self._true
            return 0.0 if args[0].dtype.is_floating_point else 0
        if meta and name in ("_to_copy", "to") and kwargs.get("device") not in (None, torch.device("meta")):
            zero = torch.zeros((), dtype=kwargs.get("dtype") or args[0].dtype, device=kwargs["device"])
            return zero.expand(args[0].shape)  # no memory, whatever the shape
        if meta and name == "nonzero":
            return torch.empty((args[0].numel(), args[0].dim()), dtype=torch.long, device="meta")
        if meta and not name.endswith("_") and "out" not in kwargs and (torch.Tag.pointwise in func.tags or (
                torch.Tag.reduction in func.tags and name in ("mean", "sum", "amax", "amin"))):
            out = _fast(func, args, kwargs)
            if out is not None:
                return out
        out = func(*args, **kwargs)
        if meta and name in ("all", "_is_all_true"):
            self._true.add(out.untyped_storage()._cdata)
        return out


def _fast(func, args, kwargs):
    """A pointwise op's or a dim reduction's meta output, fast: torch's meta path for them is Python (refs),
    ~0.1 ms each, which dominated whole forwards. dtype from the op on 1-element CPU stand-ins (same ndim, so
    type promotion ranks them alike); shape by broadcasting, or the input's with the reduced dims 1 / dropped;
    layout from an input of that shape. None: use the slow path."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if any(t.device.type != "meta" for t in tensors) or any(isinstance(v, torch.Tensor) for v in kwargs.values()):
        return None
    try:
        probe = func(*[torch.ones([1] * a.dim(), dtype=a.dtype, device="cpu") if isinstance(a, torch.Tensor) else a
                       for a in args], **kwargs)
    except Exception:  # noqa: BLE001  (a dtype without CPU kernels: the slow path knows)
        return None
    if not isinstance(probe, torch.Tensor) or (torch.Tag.reduction in func.tags and (len(args) < 2 or args[1] is None)):
        return None
    if torch.Tag.reduction in func.tags:
        dims = {d % args[0].dim() for d in ([args[1]] if isinstance(args[1], int) else args[1])}
        keep = probe.dim() == args[0].dim()
        return torch.empty([1 if i in dims else n for i, n in enumerate(args[0].shape) if keep or i not in dims],
                           dtype=probe.dtype, device="meta")
    shape = torch.broadcast_shapes(*(t.shape for t in tensors))
    like = next((t for t in tensors if t.shape == shape), None)
    if like is None:
        return torch.empty(shape, dtype=probe.dtype, device="meta")
    return torch.empty_like(like, dtype=probe.dtype)


_GROUPED_MM = {f for f in (getattr(torch, "_grouped_mm", None), getattr(torch.nn.functional, "grouped_mm", None)) if f}


class MetaKernels(TorchFunctionMode):
    """Fused kernels as a GPU runs them: scaled_dot_product_attention allocates its output and a float32
    logsumexp (freed at once), not the q x kv scores of the math fallback meta would use; grouped_mm takes
    any dtype (its meta kernel wants bf16); tolist of a meta tensor gives zeros."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            q = args[0] if args else kwargs["query"]
            v = args[2] if len(args) > 2 else kwargs["value"]
            torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
            return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
        if func in _GROUPED_MM and args[0].device.type == "meta":
            a, b = args[0], args[1]
            return torch.empty((*a.shape[:-1], b.shape[-1]), dtype=kwargs.get("out_dtype") or a.dtype, device="meta")
        if func is torch.Tensor.tolist and args[0].device.type == "meta":
            return torch.zeros((), dtype=args[0].dtype, device="cpu").expand(args[0].shape).tolist()
        return func(*args, **kwargs)


def _flash_like(module, query, key, value, attention_mask, **kwargs):
    """flash-attn's footprint: one (batch, q, heads, dv) output and a float32 logsumexp; GQA without repeats."""
    b, h, q, _ = query.shape
    torch.empty((b, h, q), dtype=torch.float32, device=query.device)
    return torch.empty((b, q, h, value.shape[-1]), dtype=query.dtype, device=query.device), None


def _register_flash() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register("kvbench_fused", _flash_like)
    AttentionMaskInterface.register("kvbench_fused", flash_attention_mask)
    return "kvbench_fused"


def meta_model(config, dtype: torch.dtype, attn: str | None = None) -> torch.nn.Module:
    """AutoModelForCausalLM of `config` on meta in `dtype`, cached per (config JSON, dtype, attn).
    attn None: what from_config picks (sdpa where supported), as generate() would run it."""
    from transformers import AutoModelForCausalLM

    key = (config.to_json_string(), str(dtype), attn)
    if key not in _MODELS:
        impl = _register_flash() if attn and attn.startswith("flash") else attn
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=dtype,
                                                     **({"attn_implementation": impl} if impl else {}))
        if len(_MODELS) >= 8:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = model.eval()
    return _MODELS[key]


class GenerateLoop:
    """generate()'s own steps on meta: the cache `_prepare_cache_for_generation` makes, an all-ones attention
    mask and position ids from it, then per forward `prepare_inputs_for_generation` -> model (logits_to_keep=1)
    -> `_update_model_kwargs_for_generation`. Run it under `meta_context()`."""

    def __init__(self, model, batch: int, implementation: str | None = None, max_cache_len: int = 0, cache_config=None):
        gc = copy.deepcopy(model.generation_config)
        gc.cache_implementation, gc.cache_config = implementation, cache_config
        gc.num_beams = gc.num_return_sequences = 1  # unset (None) until generate() fills in its defaults
        gc.use_cache, gc.is_assistant = True, False
        if hasattr(model, "_previous_max_cache_length"):  # generate() remembers the largest static length
            del model._previous_max_cache_length
        self.model, self.batch, self.kwargs = model, batch, {"use_cache": True}
        model._prepare_cache_for_generation(gc, self.kwargs, None, batch, max_cache_len)
        if model._supports_logits_to_keep():
            self.kwargs["logits_to_keep"] = 1
        self.ids = torch.zeros((batch, 0), dtype=torch.long, device="meta")

    def step(self, tokens: int):
        """A prefill of `tokens` (first call) or a decode step (later calls)."""
        m, first = self.model, self.ids.shape[1] == 0
        self.ids = torch.cat([self.ids, torch.zeros((self.batch, tokens), dtype=torch.long, device="meta")], 1)
        if first:
            self.kwargs["attention_mask"] = torch.ones_like(self.ids)
            if "position_ids" in inspect.signature(m.forward).parameters and not m.config.is_encoder_decoder:
                self.kwargs["position_ids"] = m._prepare_position_ids_for_generation(self.ids, self.kwargs)
        inputs = m.prepare_inputs_for_generation(self.ids, next_sequence_length=None if first else tokens,
                                                 is_first_iteration=first, **self.kwargs)
        out = m(**inputs, return_dict=True)
        self.kwargs = m._update_model_kwargs_for_generation(out, self.kwargs,
                                                            is_encoder_decoder=m.config.is_encoder_decoder)
        return out

    @property
    def cache(self):
        from transformers.generation.utils import ALL_CACHE_NAMES

        return next((self.kwargs[n] for n in ALL_CACHE_NAMES if self.kwargs.get(n) is not None), None)


def meta_context(*modes):
    """inference_mode (as generate), meta as the default device, the given modes, and transformers' mask
    checks reading the all-ones attention mask of an unpadded batch as all ones (`fast_all` sums it, which
    meta cannot), so sdpa skips the mask and uses GQA natively as on a GPU."""
    from contextlib import ExitStack
    from unittest import mock

    import transformers.masking_utils as masking

    stack = ExitStack()
    for cm in (torch.inference_mode(), torch.device("meta"), *modes):
        stack.enter_context(cm)
    if hasattr(masking, "fast_all"):
        stack.enter_context(mock.patch.object(masking, "fast_all", lambda tensor: True))
    return stack
