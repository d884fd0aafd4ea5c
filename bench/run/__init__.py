"""Running a cell: the worker process, loading, the timed calls, quality, the row it records."""
