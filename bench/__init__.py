"""Load-testing harness for OpenAI-compatible servers: ``python -m bench profile | sweep | compare``.

Metric names and definitions follow NVIDIA AIPerf; see ``docs/BENCHMARKS.md``.
"""
