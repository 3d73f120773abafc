"""The shipped experiment configs (YAML), installed as the package data of ``tasks.configs``.

A ``configs/...`` path that does not exist in the working directory resolves to these files
(``tasks.engine.config.find_config``), so the documented commands work from any folder once installed.
"""
