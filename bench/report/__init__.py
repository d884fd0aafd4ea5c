"""The analysis side: reads only the store (pandas + matplotlib, never torch) and writes what people read.

select (one row per cell, shared by report and compare) -> tables, figures (fig_*), markdown (report.md),
compare + compare_report (compare.md), reference (a GPU's reference report), pr + publish (the PR loop).
"""
