"""The analysis side: reads only the store (pandas + matplotlib, never torch) and writes what people read.

selection (one row per cell, one status vocabulary, shared by report and compare) -> facts (a row's memory,
floor and caveats), margins (every pairwise claim, by verdict.judge), answers (the questions per machine and
model) -> front (report.md's first screen), pages (one page per setup), tables, figures (fig_*), markdown
(report.md); compare + compare_report (compare.md); gpu_report with gpu_questions and gpu_facts (a GPU's
reference report); pr + publish (the PR loop).
"""
