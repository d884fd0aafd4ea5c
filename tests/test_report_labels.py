"""Small labels the report prints: a verdict set aside for the host's speed says so, and the capacity figure's
batch ticks never overlap (a bisected boundary puts batches close together)."""
import math

from bench.report import margins
from bench.report.fig_capacity import tick_labels
from bench.stats import verdicts


def v(note: str) -> verdicts.Verdict:
    return verdicts.Verdict(1.9, 1.8, 2.0, verdicts.DISTURBED, 0.05, 2, 2, note)


def test_a_pair_set_aside_for_the_hosts_speed_says_so_and_a_disturbed_row_says_disturbed():
    host = "head: host speed differed from base's: launch probe 13.4 us in base, 7.96 in head (1.68x > 1.5x)"
    assert "host's speed differed" in margins.word(v(f"{host}; floor 5.0% uncalibrated"))
    assert margins.word(v(f"{host}; head: e2e spread too wide; floor 5.0% uncalibrated")) == "no verdict (disturbed)"
    assert margins.word(v("base: e2e spread too wide")) == "no verdict (disturbed)"
    assert margins.word(verdicts.Verdict(1.0, 0.9, 1.1, verdicts.NOISE)) == "within noise"


def test_batch_ticks_never_overlap_and_the_largest_is_labelled():
    batches = [32, 96, 127, 133, 136, 140, 154, 160, 170, 457]
    labels = tick_labels(batches)
    shown = [b for b, t in zip(batches, labels) if t]
    assert labels[0] == "32" and labels[-1] == "457" and sum(map(bool, labels[2:9])) == 2  # 127-170: two fit
    assert all(math.log10(b / a) >= 0.09 for a, b in zip(shown, shown[1:])), shown
    assert tick_labels([1, 2, 4, 8]) == ["1", "2", "4", "8"]
    assert tick_labels([100, 104, 108]) == ["", "", "108"]  # the largest wins over neighbours too close to it
