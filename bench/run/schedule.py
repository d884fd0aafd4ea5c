"""A sweep's cells in rounds: each round a fresh worker process per GPU times every active cell in turn (ABCABC),
so each cell's interval includes what changes between processes; a time budget races the cells.

Without budget_s every cell gets `rounds` rounds. With it, the first round covers every cell; then, per question
(the cells of one setup: which is fastest per call), cells clearly behind the leader stop and keep their interval,
and the contenders get more rounds until the question is decided at the stated confidence or the budget would be
overrun by the next round. Rows are written after every round (a crash loses at most the round in flight); a cell
that is not ok is final at once, one behind once the run's spread gives it the interval it keeps;
every cell gets one console line when its answer is final.
Rounds alternate their order (forward, backward) so that no cell always runs first in a fresh process.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from bench.run import rounds as merge_rounds
from bench.run import signals
from bench.run.worker import Worker
from bench.stats import racing
from bench.stats import reproducibility as repro

CONFIDENCE = 0.95
MAX_ROUNDS = 8          # a race never gives a cell more rounds than this


class Refused(Exception):
    """A single cell the worker refused before loading (bad input, or the planner's fit check): one line, exit 2."""


@dataclass
class Cell:
    index: int
    cfg: object
    row: Optional[dict] = None
    seconds: float = 0.0       # its last round's wall time
    final: bool = False        # its line is printed; it gets no more rounds


@dataclass
class Plan:
    rounds: int = 3
    budget_s: Optional[float] = None
    slots: list = field(default_factory=lambda: [{}])  # one worker env per GPU ({} = unpinned)
    isolate: bool = True
    resume_skip: frozenset = frozenset()
    refuse_single: bool = True   # a run of one cell refuses (exit 2) what the worker refused, rather than writing it


def describe(cfg) -> str:
    """The cell's console name."""
    a = cfg.attn.name + (f"[{cfg.attn.sdpa_backend}]" if cfg.attn.sdpa_backend != "auto" else "")
    return f"{cfg.model.name} cache={cfg.cache.label()} attn={a} b={cfg.batch} p={cfg.prompt_len} n={cfg.new_tokens}"


def short(cfg) -> str:
    """The cell within its setup: strategy / attention path."""
    a = cfg.attn.name + (f"[{cfg.attn.sdpa_backend}]" if cfg.attn.sdpa_backend != "auto" else "")
    return f"{cfg.cache.label()} / {a}" + (" / compile off" if cfg.compile == "off" else "")


def question(row: dict) -> tuple:
    return tuple(str(row.get(k)) for k in ("model", "weights", "dtype", "device", "gpu", "batch", "prompt_len",
                                            "new_tokens"))


class Schedule:
    def __init__(self, cfgs: list, run_id: str, plan: Plan, write: Callable[[dict], None],
                 line: Callable[[str], None], progress: Callable[[str, int], None] = lambda text, total: None,
                 started: Optional[Worker] = None):
        """`started`: a worker already running with the first slot's environment (the pre-flight's), for round 1."""
        self.started = started
        self.cells = [Cell(i, c) for i, c in enumerate(cfgs)]
        self.run_id, self.plan, self.write, self.line, self.progress = run_id, plan, write, line, progress
        self.places: dict = {}
        self.lock = threading.Lock()
        self.done_steps = 0
        self.answers: list[str] = []
        self.refused: Optional[Refused] = None
        self.failure: Optional[Exception] = None  # what ended a slot's thread (a full store): the sweep stops

    # ---- rounds ----
    def run(self) -> list[dict]:
        signals.install()  # scancel / SIGTERM: the cells in flight leave rows that say so, no further cell starts
        t0 = time.monotonic()
        racing_ = self.plan.budget_s is not None
        self._round(1, self.cells)
        for r in range(2, (MAX_ROUNDS if racing_ else self.plan.rounds) + 1):
            active = self._next(r)
            if racing_ and active:
                estimate = sum(c.seconds for c in active) / max(len(self.plan.slots), 1)
                if time.monotonic() - t0 + estimate > self.plan.budget_s:
                    for c in active:
                        c.row["rounds_stop"] = "budget"
                    break
            if not active or signals.terminated():
                break
            self._round(r, active)
        for c in self.cells:
            if c.row and c.row.get("status") == "ok" and not c.row.get("rounds_stop"):
                c.row["rounds_stop"] = "decided" if racing_ and self._decided(c) else "planned"
        self._settle()
        self._write_all()
        for c in self.cells:
            self._final(c)
        if racing_:
            self._answer()
        if signals.terminated() and len(self.cells) > 1:
            raise SystemExit(128 + 15)  # a sweep stopped short: SIGTERM's exit code, once every row is written
        return [c.row for c in self.cells if c.row is not None]

    def _next(self, r: int) -> list[Cell]:
        """The cells that get round r."""
        ok = [c for c in self.cells if not c.final and c.row and c.row.get("status") == "ok"]
        if self.plan.budget_s is None:
            return [c for c in ok if c.row.get("rounds", 0) < self.plan.rounds]
        self._race()
        out = []
        for c in ok:
            if self.places.get(c.index) == racing.BEHIND:
                c.row["rounds_stop"] = "behind"  # its line waits for the run's spread: the interval it will keep
            elif c.row.get("rounds", 0) < self.plan.rounds or not self._decided(c):
                out.append(c)
        return out

    def _round(self, r: int, cells: list[Cell]) -> None:
        order = cells if r % 2 else list(reversed(cells))
        slots = self.plan.slots or [{}]
        shares = [order[i::len(slots)] for i in range(len(slots))]
        threads = [threading.Thread(target=self._slot, args=(r, i, env, share), daemon=True)
                   for i, (env, share) in enumerate(zip(slots, shares)) if share]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.refused is not None:
            raise self.refused
        if self.failure is not None:  # e.g. the store filled up: raised here, in the sweep's own thread
            raise self.failure
        self._settle()
        self._write_all()

    def _slot(self, r: int, i: int, env: dict, cells: list[Cell]) -> None:
        worker = Worker(env) if self.plan.isolate else None
        if worker is not None and i == 0 and self.started is not None:
            worker, self.started = self.started, None  # the pre-flight worker is a fresh process: round 1 uses it
        try:
            for c in cells:
                if signals.terminated() or self.failure is not None:
                    return
                self.progress(f"round {r}: {describe(c.cfg)}", 0)
                row, seconds = self._one(worker, c, r)
                with self.lock:
                    c.seconds = seconds
                    try:
                        self._merge(c, row, r)
                    except Refused as e:  # raised again in the sweep's own thread
                        self.refused = e
                        return
                    self.done_steps += 1
                    self.progress(f"round {r}: {describe(c.cfg)}: {c.row.get('status') if c.row else 'skipped'}", 1)
        except Exception as e:  # noqa: BLE001 - a slot thread's error would be lost to its traceback
            with self.lock:
                self.failure = self.failure or e
        finally:
            if worker is not None:
                worker.stop(graceful=True)

    def _one(self, worker: Optional[Worker], c: Cell, r: int) -> tuple[Optional[dict], float]:
        skip = self.plan.resume_skip if r == 1 else frozenset()
        if worker is not None:
            out = signals.run(worker, c.cfg, self.run_id, skip, first=r == 1)
            return out.row, out.seconds
        from bench.run.cell import run_cell  # isolate=false: this process runs the cell (torch loads here)

        t = time.monotonic()
        rec = run_cell(c.cfg, self.run_id, skip, first_round=r == 1)
        return (rec.as_row() if rec is not None else None), time.monotonic() - t

    def _merge(self, c: Cell, row: Optional[dict], r: int) -> None:
        if r == 1 and row is None:  # resume: the store holds it
            c.final = True
            self.line(f"{describe(c.cfg)}: skipped, already in the store (resume=true)")
            return
        if r == 1 and self.plan.refuse_single and len(self.cells) == 1 and row["status"] in ("oom", "error") and (
                row["error"].startswith("not run:") or row["error"].startswith("bad input: ")):
            raise Refused(row["error"].removeprefix("bad input: "))
        c.row = merge_rounds.first(row, r) if r == 1 else merge_rounds.merge(c.row, row, r)
        self.write(c.row)  # at once: a crash loses at most the cell in flight
        if c.row.get("status") != "ok":
            c.row["rounds_stop"] = "not ok"
            self._final(c)

    # ---- answers ----
    def _settle(self) -> None:
        merge_rounds.settle([c.row for c in self.cells if c.row], CONFIDENCE, same_process=not self.plan.isolate)

    def _write_all(self) -> None:
        for c in self.cells:
            if c.row is not None:
                self.write(c.row)

    def _entries(self) -> list[racing.Entry]:
        out = []
        for c in self.cells:
            r = c.row
            if r and r.get("status") == "ok" and r.get("e2e_ms") and r.get("round_sd_rel") is not None:
                k = len(r.get("round_e2e_ms") or [1])
                out.append(racing.Entry(c.index, question(r), r["e2e_ms"], repro.estimate_sd(
                    repro.Spread(r["round_sd_rel"], 1, ""), k), short(c.cfg)))
        return out

    def _race(self) -> None:
        self._settle()
        self.places = racing.standings(self._entries(), CONFIDENCE, self.places)
        for c in self.cells:
            if c.row and c.index in self.places:
                c.row["race"] = self.places[c.index]

    def _decided(self, c: Cell) -> bool:
        return racing.decided(self._entries(), self.places, question(c.row))

    def _answer(self) -> None:
        self._race()
        entries = self._entries()
        for q in dict.fromkeys(e.question for e in entries):
            if sum(e.question == q for e in entries) < 2:
                continue
            a = racing.answer(entries, self.places, q, CONFIDENCE)
            text = f"answer, {q[0]} b={q[5]} p={q[6]} n={q[7]} ({'GPU ' + q[4] if q[4] else q[3]}): {racing.describe(a)}"
            self.answers.append(text)
            self.line(text)

    def _final(self, c: Cell) -> None:
        if c.final or c.row is None:
            return
        c.final = True
        self.line(cell_line(c.cfg, c.row))


def cell_line(cfg, row: dict) -> str:
    """The one console line of a cell."""
    weights = " [RANDOM WEIGHTS]" if row.get("weights") == "random" else ""
    text = f"{describe(cfg)}{weights}: {row['status']}" + (f" ({row['error']})" if row.get("error") else "")
    if row["status"] == "ok":
        p = row.get("precision")
        prec = f", ±{p:.1%} rerun" if p is not None and p == p and p != float("inf") else ""
        text += (f" tpot={row['tpot_ms']:.2f} ms ttft={row['ttft_ms']:.1f} ms {row['decode_tok_s']:.0f} tok/s "
                 f"({row.get('rounds', 1)} rounds, {row['repeats']} calls{prec})")
        if row.get("race") == racing.BEHIND:
            text += " behind the leader: stopped"
    if row.get("disturbed"):
        text += f" DISTURBED: {row['disturbed_why']}"
    return text
