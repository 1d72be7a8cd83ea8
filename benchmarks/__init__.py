"""Benchmarks: the speed benchmark (`python -m benchmarks.speed`) and the scripts behind RESULTS.md."""
