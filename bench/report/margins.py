"""Every pairwise claim of a report ('faster', 'wins by x', 'beyond noise') as bench.report.verdict.judge makes it.

judge decides on a pair of rows from their e2e samples. A question decided on another timing (the decode step,
`tpot_ms`) hands judge a view of each row whose e2e columns are that timing's (`view`), so the ratio, its interval
and the verdict are judge's own on the figure the question ranks by. One definition of the ratio:

    margin = runner-up / winner, of the medians of the timing (above 1: the winner is faster)

At one batch and length, decode ms/token and decode tok/s are reciprocal (tok/s = batch x 1000 / ms), so the same
margin is the winner's tok/s over the runner-up's.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.stats import verdicts
from bench.report import verdict

FLOOR = verdicts.DEFAULT_FLOOR
CI_FROM = 6  # fewest calls per side for which the bootstrap interval is called a 95% CI (as for one median)
WORDS = {verdicts.SLOWER: "beyond noise", verdicts.FASTER: "beyond noise, the other way",
         verdicts.NOISE: "within noise", verdicts.DISTURBED: "no verdict (disturbed)",
         verdicts.NO_INTERVAL: "no verdict (one call)", verdicts.NO_DATA: "no verdict (no samples)"}


def word(v: verdicts.Verdict) -> str:
    """The verdict in words; a pair set aside only because the host ran at another speed says so, as neither of
    its rows is disturbed."""
    reasons = [r for r in v.note.split("; ") if r.startswith(("base: ", "head: "))]
    if v.label == verdicts.DISTURBED and reasons and all("host speed differed" in r for r in reasons):
        return "no verdict (the host's speed differed between the two rows' runs)"
    return WORDS.get(v.label, v.label)


@dataclass(frozen=True)
class Margin:
    """judge's verdict on (winner, runner-up) for `metric`: ratio = runner-up / winner."""
    v: verdicts.Verdict
    metric: str
    samples_from: str
    calibrated: bool = False

    @property
    def beyond(self) -> bool:
        """The winner is faster beyond noise."""
        return self.v.label == verdicts.SLOWER

    def interval(self) -> str:
        """'[1.71–1.79], 95% bootstrap CI' or '[...], bootstrap over 2 and 3 calls: not a 95% CI' or ''."""
        v = self.v
        if v.lo is None:
            return ""
        if on_rounds(v):
            return f"[{v.lo:.2f}–{v.hi:.2f}], 99% CI over {v.n_base} + {v.n_head} rounds in separate processes"
        few = min(v.n_base, v.n_head) < CI_FROM
        what = (f"bootstrap over {v.n_base} and {v.n_head} calls, too few for a 95% CI" if few
                else "95% bootstrap CI")
        return f"[{v.lo:.2f}–{v.hi:.2f}], {what}"

    def short(self) -> str:
        """For a table cell, the floor and the kinds said once in a legend: '×2.75 [2.72–2.81, 95% CI] beyond
        noise', '×1.16 [1.15–1.19, n=3+3] beyond noise' (too few calls for a 95% CI), 'no verdict (disturbed)'."""
        v = self.v
        if v.ratio is None:
            return word(v)
        return f"×{v.ratio:.2f}{interval_text(v)} {word(v)}"

    def text(self) -> str:
        """'×1.75 [1.71–1.79], 95% bootstrap CI: beyond noise (floor ±5.0%, uncalibrated)'."""
        v = self.v
        if v.ratio is None:
            return word(v)
        iv = self.interval()
        floor = "" if on_rounds(v) else f" (floor ±{v.floor:.1%}{'' if self.calibrated else ', uncalibrated'})"
        said = word(v) + (floor if v.label in (verdicts.SLOWER, verdicts.NOISE,
                                                                    verdicts.FASTER) else "")
        return f"×{v.ratio:.2f}" + (f" {iv}" if iv else "") + f": {said}"


def interval_text(v: verdicts.Verdict) -> str:
    """' [0.84–0.98, 95% CI]' where both sides have >= CI_FROM calls; ' [0.84–0.98, n=2+3]' (the bootstrap range
    of those calls, not a 95% CI) where not; '' without an interval."""
    if v.lo is None:
        return ""
    if on_rounds(v):
        return f" [{v.lo:.2f}–{v.hi:.2f}, 99% CI, {v.n_base}+{v.n_head} rounds]"
    few = min(v.n_base, v.n_head) < CI_FROM
    return f" [{v.lo:.2f}–{v.hi:.2f}, " + (f"n={v.n_base}+{v.n_head}]" if few else "95% CI]")


def on_rounds(v: verdicts.Verdict) -> bool:
    """Whether the verdict rests on rounds in separate processes (else on the calls of one process per side)."""
    return v.basis.startswith("measured reproducibility")


def judge(winner: dict, runner: dict, metric: str = "tpot_ms", floor: verdicts.NoiseFloor = FLOOR) -> Margin:
    """The verdict on runner-up against winner for `metric`, by bench.report.verdict.judge (base = winner)."""
    v, frm = verdict.judge(winner, runner, floor, metric)
    return Margin(v, metric, frm, floor.calibrated)


def why(m: Margin) -> str:
    """judge's reason for a disturbed verdict, shortened (the host's launch probe, a side's spread, ...)."""
    return m.v.note.split("; floor")[0][:140] if m.v.label == verdicts.DISTURBED else ""
