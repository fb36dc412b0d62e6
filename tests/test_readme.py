"""The README's Python snippets run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets_and_commands():
    text = README.read_text()
    assert "<!-- main-command -->" in text and "<!-- test-command -->" in text
    assert python_snippets()


def test_readme_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for snippet in python_snippets():
        exec(compile(snippet, str(README), "exec"), {"__name__": "__readme__"})
