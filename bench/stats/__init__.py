"""Statistics of timings: intervals, adaptive repeats, disturbed cells, verdicts (numpy + scipy only)."""
