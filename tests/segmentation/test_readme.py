"""The Python blocks of docs/parts/readme_seg.md run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "docs" / "parts" / "readme_seg.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_smp_example():
    assert any("register_encoder" in block and "smp.DeepLabV3Plus" in block for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(block):
    exec(compile(block, str(README), "exec"), {})
