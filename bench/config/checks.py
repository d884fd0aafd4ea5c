"""Input checks shared by every config dataclass: one line naming the key, the value and what is allowed.

Nothing is coerced: `batch=8.0` or `batch=true` is refused rather than read as 8 or 1, so a row never
records a value the user did not type.
"""
from __future__ import annotations

import difflib
import math
from typing import Iterable

INT_MAX = 2**63 - 1  # the largest integer torch (and a tensor's size) takes


class ConfigError(ValueError):
    """Bad input: the message is one line saying what is wrong and what is allowed (exit code 2)."""


def one_of(name: str, value, allowed: Iterable, context: str = "") -> None:
    allowed = tuple(allowed)
    if not any(value == a and type(value) is type(a) for a in allowed):  # 4.0 or True is not 4
        raise ConfigError(f"{name}={show(value)} is not allowed{context}; choose one of: {', '.join(map(str, allowed))}")


def integer(name: str, value, minimum: int | None = None, maximum: int = INT_MAX) -> None:
    """An int (not a bool, not a float), at least `minimum`, at most `maximum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={show(value)} must be an integer" + (f" >= {minimum}" if minimum is not None else ""))
    if minimum is not None and value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name}={value} must be {what}")
    if value > maximum:
        raise ConfigError(f"{name}={show(value)} is too large; at most {maximum}")


def number(name: str, value, low: float | None = None, high: float | None = None, open_low: bool = True) -> None:
    """A finite real number (int or float, not a bool) in (low, high] (or [low, high] with open_low=False)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{name}={show(value)} must be a number")
    if not math.isfinite(value):  # 1e309 reads as inf: no setting means "forever"
        raise ConfigError(f"{name}={value} must be a finite number")
    too_low = low is not None and (value <= low if open_low else value < low)
    if too_low or (high is not None and value > high):
        lo = "" if low is None else f"{'>' if open_low else '>='} {low:g}"
        hi = "" if high is None else f"<= {high:g}"
        raise ConfigError(f"{name}={value:g} must be {' and '.join(s for s in (lo, hi) if s)}")


def boolean(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={show(value)} must be true or false")


def text(name: str, value, allow_empty: bool = False) -> None:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ConfigError(f"{name}={show(value)} must be a non-empty string")


def unknown_key(name: str, known: Iterable[str], where: str = "") -> ConfigError:
    """The error for a key nobody defines, with the closest known key when there is one."""
    known = sorted(known)
    if not known:
        return ConfigError(f"{name} is not a setting{where}, which has none")
    close = difflib.get_close_matches(name.split(".")[-1], known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigError(f"{name} is not a setting{where}{hint} (known: {', '.join(known)})")


def show(value) -> str:
    """A value as the user would write it: text that reads as a number, bool or null is quoted (it was given as
    text, e.g. precision='0.01'), a long one is cut."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and (not value or not value.isprintable() or _reads_as_scalar(value)):
        return repr(value)
    return short(str(value))


def _reads_as_scalar(text: str) -> bool:
    if text.lower() in ("true", "false", "null", "nan", "inf", "-inf"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def short(text: str, limit: int = 80) -> str:
    """`text`, cut in the middle past `limit` characters (an error line stays readable)."""
    return text if len(text) <= limit else f"{text[:limit - 25]}...{text[-15:]} ({len(text)} characters)"
