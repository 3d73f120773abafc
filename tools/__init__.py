"""Command-line entry points, one module per tool, each with ``main(argv=None) -> int``.

Installed, each is a console command (``rd-train-cls``, ``rd-export``, ...: ``[project.scripts]`` in
pyproject.toml); from a checkout, ``python tools/<tool>.py`` works once the project is installed in
editable mode (``make`` does ``pip install -e .``), and ``python -m tools.<tool>`` works from the
checkout's root without installing.
"""
