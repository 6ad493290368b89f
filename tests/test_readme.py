"""The README's Python code is one session that runs as written, top to bottom.

Every ```python block of README.md is executed in order in one namespace, in a fresh folder,
so the README cannot drift from the code: a renamed argument or a placeholder fails here.
"""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python fenced block, in order."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.M | re.S):
        blocks.append((text[: match.start()].count("\n") + 2, match.group(1)))
    return blocks


def test_python_blocks_are_found():
    blocks = python_blocks("x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\n```\n")
    assert blocks == [(3, "a = 1\n"), (9, "b = 2\n")]


@pytest.mark.timeout(900)
def test_the_readme_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5
    for line, code in blocks:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
