"""The one command-line layer's pieces: argparse for verbs and flags, key=value options, one error line.

Every verb's bad input ends the same way: `error: <one line naming the key, the value and what is allowed>` on
stderr, exit code 2, before anything loads. argparse's own usage errors are folded into that one line.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from bench.config.checks import ConfigError, short, unknown_key

KEY = re.compile(r"[+~]*[A-Za-z_][\w.\-/]*")  # a key=value token's key (Hydra's: cache.nbits, hydra/launcher, +x)


class UsageError(ConfigError):
    """Bad input on the command line: one line, exit code 2."""


def fail(message: str) -> int:
    """Say what is wrong in one line on stderr; the exit code of bad input."""
    # one line, whatever the message held; a 5000-character value is cut in the middle
    text = " ".join(short(w, 200) for w in str(message).split())
    print(f"error: {text}", file=sys.stderr)
    return 2


class Parser(argparse.ArgumentParser):
    """argparse for one verb, whose errors are one UsageError line, never its multi-line usage and exit."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        if message.startswith("unrecognized arguments:"):
            flags = [a for a in message.split(":", 1)[1].split() if a.startswith("-")]
            if flags:
                raise UsageError(f"{flags[0]} is not an option of {self.prog}; options are key=value "
                                 f"(run also takes -m to sweep); see {self.prog} --help")
        raise UsageError(f"{message}; usage: {self.format_usage().strip().removeprefix('usage: ')}")

    def exit(self, status: int = 0, message: Optional[str] = None):
        if status:
            raise UsageError((message or "bad arguments").strip())
        super().exit(status, message)


def is_option(token: str) -> bool:
    """Whether a token is key=value (not a positional such as a store spec results@git_sha=abc or a path)."""
    key, eq, _ = token.partition("=")
    return bool(eq) and bool(KEY.fullmatch(key)) and "@" not in key and not exists(token)


def exists(path: str) -> bool:
    """Path(path).exists(), False for a name the system cannot even look up (too long, a NUL byte)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Option:
    default: str
    help: str = ""
    check: Optional[Callable[[str, str], object]] = None  # (key, text) -> value, or raises UsageError


def options(tokens: list[str], allowed: dict[str, Option], verb: str) -> tuple[dict, list[str]]:
    """key=value tokens checked against `allowed` (each key once, every value through its check), and the
    positionals in order. Unknown keys get the closest known key."""
    given: dict[str, str] = {}
    positionals = []
    for t in tokens:
        if not is_option(t):
            positionals.append(t)
            continue
        key, _, value = t.partition("=")
        if key not in allowed:
            raise UsageError(str(unknown_key(key, allowed, f" of bench {verb}")))
        if key in given:
            raise UsageError(f"{key} is given twice ({key}={given[key]}, {key}={value}); give it once")
        given[key] = value
    out = {}
    for key, opt in allowed.items():
        text = given.get(key, opt.default)
        out[key] = opt.check(key, text) if opt.check and key in given else text
    return out, positionals


def boolean(key: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise UsageError(f"{key}={text} must be true or false")
    return text.lower() == "true"


def positive_int(key: str, text: str, minimum: int = 1) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        raise UsageError(f"{key}={text} must be a whole number >= {minimum}")
    return int(text)


def nonempty(key: str, text: str) -> str:
    if not text.strip():
        raise UsageError(f"{key}= is empty; give a value")
    return text


def existing(key: str, text: str) -> str:
    """A store to read: a directory or a .jsonl file that exists."""
    if not text:
        raise UsageError(f"{key}= is empty; give the results directory or a .jsonl file")
    if not exists(text):
        raise UsageError(f"{key}={text} does not exist; give the results directory or a .jsonl file")
    return text


def writable_file(key: str, text: str) -> Path:
    """A file to write (its directory made if need be): not a directory, in a directory that can hold files."""
    p = Path(text)
    if p.is_dir():
        raise UsageError(f"{key}={text} is a directory; give a file name")
    writable_dir(key, str(p.parent), shown=text)
    return p


def written(key: str, value, e: OSError) -> UsageError:
    """The error of an output that failed half-way (a full disk): what was written is partial."""
    where = f" {e.filename}" if e.filename else ""
    return UsageError(f"{key}={value}: cannot write{where} ({e.strerror or e}); what it holds is incomplete")


def writable_dir(key: str, text: str, shown: str = "") -> Path:
    """An output directory, made if need be; UsageError naming the key when it cannot hold files."""
    from bench.store import check_writable

    if not text:
        raise UsageError(f"{key}= is empty; give a directory")
    p = Path(text)
    try:
        check_writable(p, key)
    except OSError as e:  # for a file's directory: name the file as given, then its directory
        where = f"{key}={shown}: its directory {text}" if shown and shown != text else f"{key}={text}"
        raise UsageError(str(e).replace(f"{key}={text}", where, 1)) from None
    return p
