"""Racing the cells of a question (successive elimination): who leads, who is clearly behind, is it decided.

A question is a set of cells that answer one thing (the lowest time per call of one setup). After each round its
leader is the cell with the lowest median; a cell whose median is above the leader's beyond noise at the stated
confidence (reproducibility.behind, on each cell's between-process spread) is behind and stops; the question is
decided once one cell is left. The margin is the runner-up over the winner with its interval.

Pure numpy + scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Optional

from scipy import stats as _st

from bench.stats.reproducibility import behind

LEADER, CONTENDER, BEHIND = "leader", "contender", "behind"


@dataclass(frozen=True)
class Entry:
    key: Hashable        # the cell
    question: Hashable   # the setup whose question it answers
    median: float        # its figure (lower is better), e.g. ms per call
    sd: float            # relative sd of that figure between runs (log scale)
    label: str = ""


def standings(entries: list[Entry], confidence: float = 0.95, out: Optional[dict] = None) -> dict:
    """Each cell's place in its question: leader, contender (not behind the leader beyond noise) or behind.
    Cells already behind in `out` stay behind (an eliminated cell gets no new rounds to come back with)."""
    out = dict(out or {})
    by_q: dict = {}
    for e in entries:
        by_q.setdefault(e.question, []).append(e)
    for cells in by_q.values():
        alive = [e for e in cells if out.get(e.key) != BEHIND] or cells
        lead = min(alive, key=lambda e: (e.median, str(e.key)))
        for e in cells:
            if e is lead:
                out[e.key] = LEADER
            elif out.get(e.key) == BEHIND or behind((e.median, e.sd), (lead.median, lead.sd), confidence):
                out[e.key] = BEHIND
            else:
                out[e.key] = CONTENDER
    return out


def decided(entries: list[Entry], places: dict, question: Hashable) -> bool:
    """Whether the question has one cell left (every other is behind)."""
    return sum(1 for e in entries if e.question == question and places.get(e.key) != BEHIND) <= 1


@dataclass(frozen=True)
class Answer:
    question: Hashable
    winner: Entry
    runner_up: Optional[Entry]
    ratio: float           # runner-up / winner (> 1: the winner is faster)
    lo: float              # its interval at the confidence
    hi: float
    decided: bool          # the runner-up is behind beyond noise
    confidence: float


def answer(entries: list[Entry], places: dict, question: Hashable, confidence: float = 0.95) -> Optional[Answer]:
    """The question's winner, its runner-up and the margin between them with its interval."""
    cells = sorted((e for e in entries if e.question == question), key=lambda e: (e.median, str(e.key)))
    if not cells:
        return None
    win = cells[0]
    if len(cells) == 1:
        return Answer(question, win, None, math.nan, math.nan, math.nan, True, confidence)
    run = cells[1]
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    d, se = math.log(run.median / win.median), math.hypot(run.sd, win.sd)
    return Answer(question, win, run, math.exp(d), math.exp(d - z * se), math.exp(d + z * se),
                  decided(entries, places, question), confidence)


def describe(a: Answer) -> str:
    """One line: the winner, the runner-up's margin with its interval, and how sure."""
    if a.runner_up is None:
        return f"{a.winner.label}: the only cell that ran"
    margin = f"{a.ratio - 1:+.1%} [{a.lo - 1:+.1%}, {a.hi - 1:+.1%}]"
    if a.decided:
        return (f"{a.winner.label} wins; next {a.runner_up.label} is {margin} slower "
                f"(decided at {a.confidence:.0%})")
    return (f"{a.winner.label} leads {a.runner_up.label} by {margin}: not decided at {a.confidence:.0%} "
            "(within noise, or the budget ran out)")
