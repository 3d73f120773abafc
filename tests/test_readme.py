"""The documentation runs and its links resolve.

Every ```python block of README.md and docs/*.md is executed as written, from the repository root, one
block per test. A block that cannot run here (it needs real data or a download) is marked on the line
right above its fence with `<!-- no-test: the reason -->` and is skipped with that reason; code meant
as an outline is still a ```python block, so nothing escapes the test by its fence name.

Every relative link in README.md, CONTRIBUTING.md and docs/*.md must point at an existing file, and its
`#anchor` at a heading of that page (GitHub's heading ids). Every repository path a hand-written page
names (`tools/...`, `configs/...`, `tests/...`, ...) must exist, so a renamed file cannot leave a stale
mention behind.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GENERATED = {"configs.md", "benchmarks.md"}  # written by tools; their prose comes from code comments

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", flags=re.S | re.M)
SKIP_MARK = re.compile(r"<!--\s*no-test:\s*(.*?)\s*-->")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:backbones|benchmarks|configs|docs|tasks|tests|tools)/[\w./<>*{}-]*)")
PYTHON_FENCES = {"py", "python3", "pycon", "ipython"}


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def fenced_blocks(text: str) -> list[tuple[str, str, int, str | None]]:
    """(language, code, line of the opening fence, no-test reason or None) for every fenced block."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = SKIP_MARK.search(above)
        blocks.append((match.group(1).strip(), match.group(2), line, mark.group(1) if mark else None))
    return blocks


def python_blocks() -> list[pytest.param]:
    params = []
    for page in CODE_PAGES:
        for language, code, line, reason in fenced_blocks(page.read_text()):
            if language == "python":
                params.append(pytest.param(code, reason, id=f"{relative(page)}:{line}"))
    return params


BLOCKS = python_blocks()


def prose(text: str) -> str:
    """`text` without fenced blocks and inline code, where link syntax is only an example."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading id of a Markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    ids = set()
    for match in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", FENCE.sub("", page.read_text()), flags=re.M):
        anchor = github_anchor(match.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        ids.add(anchor if count == 0 else f"{anchor}-{count}")
    return ids


def test_every_page_has_examples():
    readme = [b for b in BLOCKS if b.id.startswith("README.md:")]
    assert readme, "README.md has no ```python example"
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("code, reason", BLOCKS)
def test_python_block_runs(code, reason, request, monkeypatch):
    if reason is not None:
        assert reason, "a <!-- no-test: ... --> mark must say why the block cannot run"
        pytest.skip(reason)
    monkeypatch.chdir(ROOT)  # blocks may name configs/... relative to the checkout
    module = types.ModuleType("doc_block")  # a real module: dataclasses and pickle look classes up there
    monkeypatch.setitem(sys.modules, module.__name__, module)
    # dont_inherit: run the block as written, not under this file's `from __future__` imports
    exec(compile(code, request.node.callspec.id, "exec", dont_inherit=True), module.__dict__)


@pytest.mark.parametrize("page", CODE_PAGES, ids=relative)
def test_python_code_is_fenced_as_python(page):
    """Only ```python blocks are run: another name for Python code would hide a block from the test."""
    other = [line for lang, _, line, _ in fenced_blocks(page.read_text()) if lang in PYTHON_FENCES]
    assert not other, f"{relative(page)}: fence Python code as ```python (lines {other})"


def test_no_test_marks_sit_on_python_blocks():
    for page in CODE_PAGES:
        text = page.read_text()
        marked = {line for lang, _, line, reason in fenced_blocks(text) if reason is not None}
        python = {line for lang, _, line, _ in fenced_blocks(text) if lang == "python"}
        assert marked <= python, f"{relative(page)}: no-test marks above non-python blocks {marked - python}"
        assert len(SKIP_MARK.findall(text)) == len(marked), (
            f"{relative(page)}: a no-test mark not above a fence"
        )


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no file {linked})")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no heading #{anchor} in {relative(linked)})")
    assert not broken, f"{relative(page)}: broken links: {broken}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in GENERATED], ids=relative)
def test_named_repository_paths_exist(page):
    """`tools/x.py`, `configs/...yaml`, `tests/...` mentioned anywhere in a page exist (placeholders such
    as `tools/<tool>.py` or `benchmarks/*.py` are not checked)."""
    missing = []
    for path in REPO_PATH.findall(page.read_text()):
        path = path.rstrip(".,:;")
        if re.search(r"[<>*{}]", path) or (ROOT / path).exists():
            continue
        missing.append(path)
    assert not missing, f"{relative(page)} names paths that do not exist: {sorted(set(missing))}"
