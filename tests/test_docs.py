"""The documentation site: every page's Python runs, every code reference exists, and the site builds strictly,
offline, with the numbers the code computes."""

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
CONCEPTS = [
    "overview", "bpe", "embeddings", "attention", "block", "training", "generation", "packaging", "scaling",
]


def load_hooks():
    spec = importlib.util.spec_from_file_location("pygpt_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_blocks(page: Path) -> list[str]:
    """Fenced ```python blocks at any indentation (inside admonitions too), dedented."""
    blocks = []
    for match in re.finditer(r"^([ \t]*)```python[^\n]*\n(.*?)^\1```", page.read_text(), flags=re.DOTALL | re.MULTILINE):
        indent = match[1]
        blocks.append("".join(line[len(indent):] for line in match[2].splitlines(keepends=True)))
    return blocks


def symbol_references(page: Path) -> list[str]:
    text = page.read_text()
    inline = re.findall(r"`((?:pygpt_hf|scripts)/[\w/]+\.py:[\w.]+)`", text)
    listed = re.findall(r"\{\{\s*source\(\"([^\"]+)\"\)\s*\}\}", text)
    return inline + listed


def test_every_concept_page_exists_with_code_and_a_figure():
    for name in CONCEPTS:
        page = DOCS / "concepts" / f"{name}.md"
        assert page.is_file(), f"missing concept page {page.relative_to(ROOT)}"
        text = page.read_text()
        assert symbol_references(page), f"{page.name} references no code (FILE.py:SYMBOL)"
        assert "](../figures/" in text or "```mermaid" in text, f"{page.name} shows no figure"


def test_every_referenced_symbol_exists():
    find_symbol = load_hooks().find_symbol
    checked = 0
    for page in PAGES:
        for ref in symbol_references(page):
            try:
                find_symbol(ref)
            except ValueError as err:
                pytest.fail(f"{page.relative_to(ROOT)}: {err}")
            checked += 1
    assert checked >= 30


def test_find_symbol_rejects_what_is_not_there():
    find_symbol = load_hooks().find_symbol
    assert "def train_tokenizer" in find_symbol("pygpt_hf/bpe.py:train_tokenizer")
    assert find_symbol("pygpt_hf/tokenization_pygpt.py:PyGPTTokenizer.bpe").startswith("def bpe")
    for ref, problem in [("pygpt_hf/bpe.py:no_such_function", "defines no"),
                         ("pygpt_hf/nope.py:x", "does not exist"), ("bpe.py", "not a symbol reference")]:
        with pytest.raises(ValueError, match=problem):
            find_symbol(ref)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.stem)
def test_page_python_blocks_run(page, tmp_path, monkeypatch):
    """A page's blocks run in order in one namespace, as a reader would paste them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace = {"__name__": f"__docs_{page.stem}__"}
    for i, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.relative_to(ROOT)} (python block {i + 1})", "exec"), namespace)  # noqa: S102 - the pages' own code


def test_mkdocs_build_strict_offline_with_computed_numbers(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a build warning
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200, check=False, env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    assert not re.search(r"^\s*WARNING\b", done.stderr, flags=re.MULTILINE), done.stderr[-3000:]

    pages = {p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")}
    for name in CONCEPTS:
        assert f"concepts/{name}/index.html" in pages
    # Offline: no script, stylesheet or image is loaded from another host.
    for path, text in pages.items():
        remote = re.findall(r"""<(?:script|img)[^>]*\ssrc=["']((?:https?:)?//[^"']+)""", text)
        remote += re.findall(r"""<link[^>]*\shref=["']((?:https?:)?//[^"']+)["'][^>]*>""", text)
        assert not remote, f"{path} loads {remote}"
        assert "{{" not in re.sub(r"<code.*?</code>|<pre.*?</pre>", "", text, flags=re.DOTALL), f"{path}: unexpanded {{"
    overview = pages["concepts/overview/index.html"]
    for script in ("vendor/mermaid.min.js", "vendor/katex/katex.min.js"):
        assert script in overview and (site / script).is_file(), script
    assert '<pre class="mermaid">' in overview
    assert (site / "vendor/katex/fonts").is_dir()
    # Figures are drawn by the build and shown by the pages.
    for figure in ("sinusoidal", "rope", "causal_mask", "attention_patterns", "loss_curve", "bpe_compression"):
        assert (site / "figures" / f"{figure}.png").stat().st_size > 5000, figure
        assert any(f"figures/{figure}.png" in text for text in pages.values()), f"no page shows {figure}.png"
    # The numbers are the code's: recount the default model's parameters here and find them on the page.
    facts = json.loads((ROOT / "build/docs/figures/facts.json").read_text())
    block_text = html.unescape(re.sub(r"<[^>]+>", "", pages["concepts/block/index.html"]))
    assert count_default_params() == int(facts["params_total"].replace(",", ""))
    assert facts["params_total"] in block_text
    assert facts["flops_forward_xla"] in block_text
    # The API reference renders the public classes.
    api = pages["api/index.html"]
    for name in ("PyGPTConfig", "FlaxPyGPTForCausalLM", "FlaxPyGPTModel", "PyGPTForCausalLM",
                 "PyGPTTokenizer", "PyGPTTokenizerFast", "train_tokenizer"):
        assert 'id="pygpt_hf.' in api and name in api, name


def count_default_params() -> int:
    import jax

    from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig

    model = FlaxPyGPTForCausalLM(PyGPTConfig(), seed=0)
    return sum(x.size for x in jax.tree_util.tree_leaves(model.params))


def test_nav_takes_optional_pages_when_present(tmp_path):
    """docs/architecture.md and docs/performance.md (written by others) join the nav when they exist."""
    hooks = load_hooks()
    hooks.fetch_vendor = lambda: None
    hooks.make_figures = dict
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "performance.md").write_text("# Performance\n")
    config = {"docs_dir": str(docs), "nav": [{"Home": "index.md"}]}
    hooks.on_config(config)
    assert config["nav"][-1] == {"Notes": [{"Performance notes": "performance.md"}]}


def test_hook_expands_facts_and_sources_and_names_the_page_of_a_bad_one():
    from mkdocs.exceptions import PluginError

    hooks = load_hooks()
    hooks._facts.update({"answer": "42"})
    page = type("Page", (), {"file": type("File", (), {"src_uri": "concepts/x.md"})()})()
    markdown = 'It is {{ facts.answer }}.\n\n    {{ source("pygpt_hf/bpe.py:train_tokenizer") }}\n'
    out = hooks.on_page_markdown(markdown, page=page, config={}, files=[])
    assert out.startswith("It is 42.")
    assert '    ```python title="pygpt_hf/bpe.py:train_tokenizer"\n    def train_tokenizer(' in out
    with pytest.raises(PluginError, match=r"concepts/x.md: unknown fact 'nope'"):
        hooks.on_page_markdown("{{ facts.nope }}", page=page, config={}, files=[])
    with pytest.raises(PluginError, match=r"concepts/x.md: .*defines no missing"):
        hooks.on_page_markdown('{{ source("pygpt_hf/bpe.py:missing") }}', page=page, config={}, files=[])
