"""bench compare: one timing verdict per cell from raw samples against a calibrated noise floor; memory exact."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.stats import verdicts
from bench.cli import report as report_cli
from bench.report import compare as cmp
from tests.rows import row, store

ROOT = Path(__file__).resolve().parent.parent
CACHES = ("dynamic", "none", "static", "quantized", "quantized_int2")


def cells(shift=1.0, seed=0, noise=0.01, run_id="r", batches=(1, 2, 4, 8), **kw):
    """20 cells (5 strategies x 4 batches); head = base x shift."""
    return [row(c, e2e=100.0 * (1 + i) * shift, noise=noise, seed=seed * 100 + i * 7 + j, run_id=run_id,
                batch=b, **kw)
            for i, c in enumerate(CACHES) for j, b in enumerate(batches)]


@pytest.fixture
def sides(tmp_path):
    made = []

    def make(base_rows, head_rows):
        made.append(1)
        b, h = tmp_path / f"base{len(made)}", tmp_path / f"head{len(made)}"
        store(b, base_rows, "base")
        store(h, head_rows, "head")
        return cmp.side(str(b), "base"), cmp.side(str(h), "head")
    return make


def test_one_verdict_per_cell_flags_a_real_shift_and_not_noise(sides):
    floor = verdicts.NoiseFloor(floor=0.02, calibrated=True, source="test", n_cells=20)
    b, h = sides(cells(seed=1), cells(shift=1.10, seed=2))
    res = cmp.compare(b, h, floor)
    assert len(res.cells) == 20  # one verdict each, not one per metric
    assert all(c.time.label == verdicts.SLOWER for c in res.cells)
    for c in res.cells:
        assert c.time.ratio == pytest.approx(1.10, rel=0.02) and c.time.lo < 1.10 < c.time.hi
        assert c.tpot_ratio == pytest.approx(1.10, rel=0.03)  # the breakdown rides along
    b, h = sides(cells(seed=1), cells(seed=2))
    res = cmp.compare(b, h, floor)
    assert sum(c.time.label != verdicts.NOISE for c in res.cells) <= 1


def test_aa_calibration_then_judging_with_it(sides, tmp_path):
    """A drift between runs that the within-run intervals do not cover: the A/A floor absorbs it."""
    a1, a2 = cells(seed=1, noise=0.02), [dict(r) for r in cells(seed=2, noise=0.02)]
    drift = np.random.default_rng(3).normal(0, 0.02, len(a2))  # per-cell drift between the two runs
    for r, d in zip(a2, drift):
        r["e2e_samples_ms"] = [x * float(np.exp(d)) for x in r["e2e_samples_ms"]]
    b, h = sides(a1, a2)
    floor = cmp.calibrate(cmp.aa_pairs(b, h), "A/A test")
    assert floor.calibrated and floor.n_cells == 20 and 0.01 < floor.floor < 0.2
    res = cmp.compare(b, h, floor)
    assert sum(c.time.label in (verdicts.SLOWER, verdicts.FASTER) for c in res.cells) <= 1  # at most 1 in 20
    naive = cmp.compare(b, h, verdicts.NoiseFloor(floor=0.0, calibrated=True, source="none"))
    assert sum(c.time.label in (verdicts.SLOWER, verdicts.FASTER) for c in naive.cells) >= 3  # the floor does work


def test_memory_is_compared_exactly(sides):
    b, h = sides([row("dynamic", kv=10.0, peak=500.0)], [row("dynamic", kv=10.0 + 2 / 2**20, peak=500.5)])
    (c,) = cmp.compare(b, h, verdicts.DEFAULT_FLOOR).cells
    assert c.memory == ["KV bigger (+0.0%)"]  # two bytes more KV is a change; half a MiB of peak is not


def test_disturbed_sides_are_never_a_clean_verdict(sides):
    b, h = sides([row("dynamic")], [row("dynamic", e2e=150, disturbed=True, disturbed_why="e2e spread too wide")])
    (c,) = cmp.compare(b, h, verdicts.DEFAULT_FLOOR).cells
    assert c.time.label == verdicts.DISTURBED and "spread" in c.time.note


@pytest.mark.parametrize("head_probe, gpu, label", [
    (3.1, "G", verdicts.DISTURBED),   # the same machine type, its host 1.55x slower in head: not the code
    (2.9, "G", verdicts.SLOWER),      # 1.45x: within what a cell may drift by itself, judged
    (3.1, "H", verdicts.SLOWER),      # another GPU: its host is part of what is compared
])
def test_a_host_that_ran_at_another_speed_is_no_verdict(sides, head_probe, gpu, label):
    kw = dict(device="cuda", cpu="Xeon")
    b, h = sides([row("dynamic", gpu="G", launch_us=2.0, launch_end_us=2.0, **kw)],
                 [row("dynamic", e2e=130.0, gpu=gpu, launch_us=head_probe, launch_end_us=head_probe, **kw)])
    (c,) = cmp.compare(b, h, verdicts.DEFAULT_FLOOR).cells
    assert c.time.label == label
    assert ("host speed differed" in c.time.note) == (label == verdicts.DISTURBED)
    assert (cmp.aa_pairs(b, h) == []) == (label == verdicts.DISTURBED)  # nor does it calibrate a floor


def test_cells_match_across_gpus_and_unmatched_are_listed(sides):
    b, h = sides([row("dynamic", gpu="GPU A", device="cuda"), row("static", gpu="GPU A", device="cuda")],
                 [row("dynamic", gpu="GPU B", device="cuda"), row("none", gpu="GPU B", device="cuda"),
                  row("static", status="oom", gpu="GPU B", device="cuda")])
    res = cmp.compare(b, h, verdicts.DEFAULT_FLOOR)
    assert [c.label for c in res.cells] == ["dynamic / sdpa"]
    assert [(lab, has) for _, lab, has in res.only_base] == [("static / sdpa", "oom: oom: synthetic")]
    assert [lab for _, lab, _ in res.only_head] == ["none / sdpa"]


def test_schema_1_rows_of_three_repeats_give_their_samples_back():
    """Old rows kept p10/p50/p90 of 2-3 repeats: numpy's linear percentiles determine those samples exactly."""
    from bench.report import selection as select

    for xs in ([10.0, 11.0, 14.0], [10.0, 12.0]):
        p10, p50, p90 = np.percentile(xs, [10, 50, 90])
        got, how = select.samples({"e2e_p10_ms": p10, "e2e_p90_ms": p90, "e2e_ms": p50, "repeats": len(xs)}, "e2e_ms")
        assert how == "recovered" and got == pytest.approx(sorted(xs))
    got, how = select.samples({"e2e_p10_ms": 1, "e2e_p90_ms": 2, "e2e_ms": 1.5, "repeats": 5}, "e2e_ms")
    assert got is None and "5 repeats" in how


def test_compare_md_and_noise_file(sides, tmp_path):
    b, h = tmp_path / "b", tmp_path / "h"
    store(b, cells(seed=1, run_id="b"), "b")
    store(h, cells(shift=1.25, seed=2, run_id="h"), "h")
    assert report_cli.compare([f"{b}@run_id=b", f"{h}", f"out={tmp_path / 'o'}"]) == 0
    md = (tmp_path / "o" / "compare.md").read_text()
    assert "20 cells compared: 20 slower" in md and "not calibrated" in md
    assert (tmp_path / "o" / "compare_ratios.png").exists()
    first = md
    assert report_cli.compare([f"{b}@run_id=b", f"{h}", f"out={tmp_path / 'o'}"]) == 0
    assert (tmp_path / "o" / "compare.md").read_text() == first  # byte-identical


def test_calibrate_writes_the_floor_that_noise_reads(tmp_path):
    a = tmp_path / "a"
    store(a, cells(seed=1, run_id="x"), "x")
    store(a, cells(seed=2, run_id="y"), "y")
    out = tmp_path / "cal"
    assert report_cli.compare([f"{a}@run_id=x", f"{a}@run_id=y", f"out={out}", "calibrate=true"]) == 0
    floor = verdicts.NoiseFloor.from_dict(json.loads((out / "noise.json").read_text()))
    assert floor.calibrated and floor.n_cells == 20
    assert "A/A calibration" in (out / "compare.md").read_text()
    judged = tmp_path / "judged"
    assert report_cli.compare([f"{a}@run_id=x", f"{a}@run_id=y", f"out={judged}", f"noise={out / 'noise.json'}"]) == 0
    assert f"±{floor.floor:.1%}, calibrated" in (judged / "compare.md").read_text()


def test_no_torch_import(tmp_path):
    from tests.conftest import run_without_torch

    a = tmp_path / "a"
    store(a, cells(seed=1), "x")
    code = ("import sys; from bench.cli import report as cli; "
            f"assert cli.compare([{str(a)!r}, {str(a)!r}, 'out={tmp_path / 'o'}']) == 0")
    p = run_without_torch(code, [], tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
