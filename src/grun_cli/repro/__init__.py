"""`grun repro`: the paper's tables rerun from their selected configs and checked.

Each table is a folder under ``experiments/`` (``table.yaml``: its cells; ``expected_ci.json``:
the CPU-scale numbers with tolerances measured over seeds; ``claims.yaml``: the paper's
qualitative claims as checks). ``manifest`` reads them, ``runner`` makes the rows,
``expected`` and ``claims`` judge them.
"""
