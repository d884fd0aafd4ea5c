"""kvbench: which KV-cache strategy to use with transformers' generate(), and what it costs."""
import os

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the profiler's start/stop lines off the console
__version__ = "0.1.0"
