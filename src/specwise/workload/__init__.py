"""Mapping a workload: concurrency sweeps, and (later) simulation and planning."""
