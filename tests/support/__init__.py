"""Tooling the tests and the benchmarks share: servers of their own and wire counters.

It lives under ``tests/`` so the project's top level stays what its design names, and so it
ships where its users ship: the sdist carries ``tests/`` and ``benchmarks/``, the wheel
carries neither. Nothing here imports pytest (the benchmark's environment has none): what a
missing tool means to a test is decided in ``tests/selection.py``.
"""
