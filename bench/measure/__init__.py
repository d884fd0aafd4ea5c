"""Instruments: the clock around generate(), memory counters, the bytes a cache holds."""
