"""Side-by-side speed benchmarks: ours and the anchor in one process (``python -m benchmarks``).

One module per area (``backbone``, ``classification``, ``detection``, ``segmentation``, ``fewshot``,
``deploy``), each with ``run(quick) -> rows`` and a ``main`` for ``python -m benchmarks.<area>``. They share
one timer (``timing``), one machine description (``machine``) and one row builder and table writer
(``report``); ``suite`` runs every area and writes docs/benchmarks.md.
"""
