"""The README's Python examples run, as written, against the shipped models."""
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_block_runs(index, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path))
    exec(compile(_python_blocks()[index], f"README.md block {index}", "exec"), {"__name__": "__readme__"})
