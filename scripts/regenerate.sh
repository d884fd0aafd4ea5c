#!/usr/bin/env bash
# Regenerate every committed output from the committed store (the same store and code give byte-identical files):
# plots/ and its report, the GPU reports, the committed comparisons and the CPU A/A examples.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY -m bench report store=results out=plots
$PY -m bench gpu-report gpu="NVIDIA H100 80GB HBM3" out=results/h100-report.md
$PY -m bench gpu-report gpu="NVIDIA H200" out=results/h200-report.md
$PY -m bench compare "results@gpu=NVIDIA H100 80GB HBM3" "results@gpu=NVIDIA H200" out=plots/compare-h100-h200
$PY -m bench compare results@run_id=20261201T141332-vm-1971 results@run_id=20261201T141549-vm-2329 \
  out=plots/compare-h200-gpt2-aa
$PY -m bench compare results@run_id=20261201T135829-vm-493 results@run_id=20261201T135926-vm-745 \
  out=plots/compare-h200-static-aa
G=examples/aa-cpu-gpt2
$PY -m bench compare $G/store@run_id=20261202T170543 $G/store@run_id=20261202T171223 out=$G/aa-1-2
$PY -m bench compare $G/store@run_id=20261202T170543 $G/shifted out=$G/shift-1-vs-2x1.10
T=examples/aa-cpu
$PY -m bench compare $T/store@run_id=cpu-aa-1 $T/store@run_id=cpu-aa-2 out=$T/aa-1-2
$PY -m bench compare $T/store@run_id=cpu-aa-1 $T/shifted out=$T/shift-1-vs-2x1.10
