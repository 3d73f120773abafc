"""The project works installed: console commands, shipped configs, every package in the wheel."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tasks.engine.config import find_config, load_yaml_with_bases, shipped_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the pyproject tests skip (their parameter lists are empty)
    tomllib = None
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text()) if tomllib else {}
SCRIPTS = PYPROJECT.get("project", {}).get("scripts", {})
PACKAGES = PYPROJECT.get("tool", {}).get("setuptools", {}).get("packages", [])
needs_pyproject = pytest.mark.skipif(tomllib is None, reason="reads pyproject.toml with tomllib (3.11+)")


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_every_console_command_points_at_a_main(command):
    module_name, _, function = SCRIPTS[command].partition(":")
    assert function == "main", SCRIPTS[command]
    assert callable(importlib.import_module(module_name).main)


@needs_pyproject
def test_every_tool_is_a_console_command():
    tools = {p.stem for p in (ROOT / "tools").glob("*.py")} - {"__init__"}
    commands = {target.partition(":")[0] for target in SCRIPTS.values()}
    assert {f"tools.{tool}" for tool in tools} <= commands


def test_no_tool_edits_sys_path():
    offenders = [p.name for p in (ROOT / "tools").glob("*.py") if "sys.path.insert" in p.read_text()]
    assert not offenders, offenders


@needs_pyproject
def test_every_package_folder_is_listed():
    # Packages are listed by hand (generic top-level names); a forgotten one would be missing when installed.
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("backbones", "benchmarks", "tasks", "tools")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert folders <= set(PACKAGES), sorted(folders - set(PACKAGES))


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_is_found_among_the_shipped_configs(config, tmp_path, monkeypatch):
    shipped = shipped_config(config)
    assert shipped is not None and shipped.read_bytes() == (ROOT / config).read_bytes()
    monkeypatch.chdir(tmp_path)  # a working directory without configs/: what an installed user has
    assert find_config(config) == shipped
    assert load_yaml_with_bases(config) == load_yaml_with_bases(ROOT / config)


def test_a_user_config_can_build_on_a_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "mine" / "det.yaml"
    own.parent.mkdir()
    own.write_text("_base_: configs/detection/faster_rcnn_r18_fpn_cpu.yaml\ntrain:\n  epochs: 1\n")
    merged = load_yaml_with_bases(own)
    expected = load_yaml_with_bases(ROOT / "configs/detection/faster_rcnn_r18_fpn_cpu.yaml")
    assert merged["train"]["epochs"] == 1 and merged["model"] == expected["model"]
    assert shipped_config("configs/detection/nothing.yaml") is None and shipped_config("det.yaml") is None


@needs_pyproject
def test_the_wheel_holds_every_package_config_and_command(tmp_path):
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building a wheel without network needs setuptools in this environment")
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "src"
    for top in ("backbones", "benchmarks", "tasks", "tools", "configs"):
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    build = subprocess.run(
        [*command, "-w", str(tmp_path / "dist"), "."], cwd=source, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for config in CONFIGS:
        assert "tasks/configs/" + config.removeprefix("configs/") in names, config
    for package in PACKAGES:
        assert package.replace(".", "/") + "/__init__.py" in names, package
    for command_name, target in SCRIPTS.items():
        assert f"{command_name} = {target}" in entry_points
