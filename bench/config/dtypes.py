"""The one dtype parser: a name (or a torch.dtype) to its canonical name, its item size, and, lazily, the torch dtype.

Torch-free at import: the parent process of `bench run` and the report never load torch. Accepted spellings are
torch's own names ("float16", "torch.bfloat16") and the usual short ones ("fp16", "bf16", "half", "fp32",
"float"); "auto" is not a dtype here (callers resolve it first).
"""
from __future__ import annotations

_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32",
            "fp64": "float64", "double": "float64", "fp8": "float8_e4m3fn"}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
            "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1}


def canonical(dtype) -> str:
    """torch's name of a dtype given as a name, an alias or a torch.dtype: 'bf16' -> 'bfloat16'."""
    name = str(dtype).lower().removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in ITEMSIZE:
        raise ValueError(f"dtype={dtype} is not a dtype; use one of: {', '.join(ITEMSIZE)} (or fp16, bf16, fp32)")
    return name


def itemsize(dtype) -> int:
    """Bytes per element."""
    return ITEMSIZE[canonical(dtype)]


def torch_dtype(dtype):
    """The torch.dtype (imports torch)."""
    import torch

    return getattr(torch, canonical(dtype))
