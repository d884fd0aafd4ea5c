"""The environment that produced a row: hardware, driver and library versions, git sha."""
from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import socket
import subprocess
from pathlib import Path

import torch

from bench.config import paths
from bench.config.paths import ROOT


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return ""


def _git_sha() -> str:
    try:
        root = ROOT
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if sha and dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def _code_hash() -> str:
    """Hash of the package and its configs as they are on disk: names the code that ran even where the
    git metadata is missing or stale (a copied tree)."""
    return paths.source_hash("bench/**/*.py", "conf/**/*.yaml")[:12]


def _cpu() -> str:
    """The host CPU model: at batch 1 a GPU decode step is often bound by the host launching kernels."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


@functools.lru_cache(maxsize=None)
def environment(device: str) -> dict:
    cuda = device == "cuda" and torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name() if cuda else "",
        "cpu": _cpu(),
        "driver": _driver() if cuda else "",
        "cuda": (torch.version.cuda or "") if cuda else "",
        "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
        # the CUDA caching allocator's settings change what fits (expandable_segments vs fragmentation)
        "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") if cuda else "",
        "torch": str(torch.__version__),  # a plain str: TorchVersion would need torch to unpickle
        "transformers": _version("transformers"),
        "quanto": _version("optimum-quanto"),
        "hqq": _version("hqq"),
        "flash_attn": _version("flash-attn") or _version("flash_attn"),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "git_sha": _git_sha(),
        "code_hash": _code_hash(),
    }


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from bench.config.settings import NO_GPU, ConfigError
        raise ConfigError(NO_GPU)
    return device


def report() -> str:
    """`python -m bench env`: what a row's environment columns would say here."""
    dev = resolve_device("auto")
    return "\n".join(f"{k}: {v}" for k, v in {"device": dev, **environment(dev)}.items())
