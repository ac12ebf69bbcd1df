"""Benchmarks: each module has ``main(quick: bool)`` and prints measured numbers and ratios, never asserts."""
