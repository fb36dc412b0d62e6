"""MkDocs hooks: what the pages show comes from running the project's code when the site is built.

- `on_config`: fetch the browser libraries (Mermaid, KaTeX; pinned, through `npm pack`) into
  `build/docs/vendor/` once, so the site needs no CDN when built or viewed; draw the figures and compute the
  numbers with `scripts/make_figures.py` into `build/docs/figures/` (again whenever the code changes); add
  the optional notes pages to the nav when they exist.
- `on_files`: put both folders into the site (they live outside `docs/`, so `mkdocs serve` does not
  rebuild in a loop when they are written).
- `on_page_markdown`: replace `{{ facts.NAME }}` by the computed value and `{{ source("FILE.py:SYMBOL") }}`
  by that symbol's current source; an unknown name fails the build, naming the page.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "docs"
VENDOR, FIGURES = BUILD / "vendor", BUILD / "figures"
log = logging.getLogger("mkdocs.hooks.pygpt")

# Browser libraries, pinned: (npm package@version, {file in the package tarball: path under vendor/}).
# Mermaid 11 is the major version Material for MkDocs drives; it uses a global `mermaid` when one is loaded.
NPM_PACKAGES = {
    "mermaid@11.12.0": {"package/dist/mermaid.min.js": "mermaid.min.js"},
    "katex@0.16.22": {
        "package/dist/katex.min.js": "katex/katex.min.js",
        "package/dist/katex.min.css": "katex/katex.min.css",
        "package/dist/contrib/auto-render.min.js": "katex/contrib/auto-render.min.js",
        "package/dist/fonts/": "katex/fonts/",  # a folder: every file under it
    },
}

# Pages written beside the concepts by others; listed in the nav only when present.
OPTIONAL_PAGES = {"architecture.md": "Architecture notes", "performance.md": "Performance notes"}

FACT = re.compile(r"\{\{\s*facts\.(\w+)\s*\}\}")
SOURCE = re.compile(r"^(?P<indent>[ \t]*)\{\{\s*source\(\"(?P<ref>[^\"]+)\"\)\s*\}\}[ \t]*$", re.MULTILINE)
SYMBOL_REF = re.compile(r"^(?P<path>(?:pygpt_hf|scripts)/[\w/]+\.py):(?P<symbol>[A-Za-z_][\w.]*)$")

_facts: dict = {}


# ----------------------------------------------------------------------------------------------------------
# Symbols: `pygpt_hf/bpe.py:train_tokenizer`, `pygpt_hf/modeling_flax_pygpt.py:FlaxPyGPTAttention.__call__`


def find_symbol(ref: str) -> str:
    """The source of `FILE.py:NAME` (NAME may be `Class.method`); ValueError naming what is missing."""
    match = SYMBOL_REF.match(ref)
    if not match:
        raise ValueError(f"{ref!r} is not a symbol reference of the form pygpt_hf/FILE.py:NAME")
    path = ROOT / match["path"]
    if not path.is_file():
        raise ValueError(f"{ref!r}: the file {match['path']} does not exist")
    text = path.read_text(encoding="utf-8")
    nodes = ast.parse(text).body
    node = None
    for name in match["symbol"].split("."):
        node = next((n for n in nodes if _defines(n, name)), None)
        if node is None:
            raise ValueError(f"{ref!r}: {match['path']} defines no {match['symbol']}")
        nodes = getattr(node, "body", [])
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    lines = text.splitlines()[first - 1: node.end_lineno]
    return textwrap.dedent("\n".join(lines))


def _defines(node: ast.stmt, name: str) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    return False


# ----------------------------------------------------------------------------------------------------------
# Browser libraries


def fetch_vendor() -> None:
    """`npm pack` each pinned package (npm checks its integrity) and keep only the files the site loads."""
    wanted = [VENDOR / target for files in NPM_PACKAGES.values() for target in files.values()]
    if all(path.exists() for path in wanted):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise PluginError(
            "the docs build needs npm (Node.js) once, to fetch Mermaid and KaTeX into build/docs/vendor/ "
            "so that the site works offline; install Node.js 18+ or copy that folder from a machine that has it"
        )
    with tempfile.TemporaryDirectory() as tmp:
        log.info("fetching %s with npm pack", ", ".join(NPM_PACKAGES))
        done = subprocess.run([npm, "pack", "--silent", "--pack-destination", tmp, *NPM_PACKAGES],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PluginError(f"npm pack {' '.join(NPM_PACKAGES)} failed: {done.stderr.strip()[-2000:]}")
        staging = Path(tmp) / "vendor"
        for spec, files in NPM_PACKAGES.items():
            name, version = spec.rsplit("@", 1)
            with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as archive:
                for member in archive.getmembers():
                    target = _vendor_target(member.name, files)
                    if target is not None and member.isfile():
                        destination = staging / target
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        destination.write_bytes(archive.extractfile(member).read())
        if VENDOR.exists():
            shutil.rmtree(VENDOR)
        VENDOR.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), VENDOR)  # whole or not at all


def _vendor_target(member: str, files: dict[str, str]) -> str | None:
    for source, target in files.items():
        if member == source:
            return target
        if source.endswith("/") and member.startswith(source) and "/" not in member[len(source):]:
            return target + member[len(source):]
    return None


# ----------------------------------------------------------------------------------------------------------
# Figures and facts


def code_fingerprint() -> str:
    """Changes whenever the figure script, the package or the corpus changes: then the figures are redrawn."""
    digest = hashlib.sha256()
    for path in sorted([ROOT / "scripts" / "make_figures.py", *(ROOT / "pygpt_hf").glob("*.py"),
                        ROOT / "pygpt_hf" / "training" / "scaling.py", ROOT / "pygpt_hf" / "training" / "sharding.py",
                        ROOT / "pygpt_hf" / "data" / "tinyshakespeare.txt"]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def make_figures() -> dict:
    fingerprint = code_fingerprint()
    facts_file = FIGURES / "facts.json"
    if facts_file.is_file():
        facts = json.loads(facts_file.read_text())
        if facts.get("fingerprint") == fingerprint:
            return facts
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # this checkout's pygpt_hf
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "scripts" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    if FIGURES.exists():
        shutil.rmtree(FIGURES)
    facts = module.make_all(FIGURES, log=log.info)
    facts["fingerprint"] = fingerprint
    facts_file.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    return facts


# ----------------------------------------------------------------------------------------------------------
# MkDocs events


def on_config(config, **kwargs):
    fetch_vendor()
    _facts.clear()
    _facts.update(make_figures())
    docs = Path(config["docs_dir"])
    listed = json.dumps(config["nav"])
    extra = [{title: page} for page, title in OPTIONAL_PAGES.items() if (docs / page).is_file() and page not in listed]
    if extra:
        config["nav"].append({"Notes": extra})
    return config


def on_files(files, config, **kwargs):
    for folder, prefix in ((VENDOR, "vendor"), (FIGURES, "figures")):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix != ".json":
                uri = f"{prefix}/{path.relative_to(folder).as_posix()}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    where = page.file.src_uri

    def fact(match: re.Match) -> str:
        name = match[1]
        if name not in _facts:
            raise PluginError(f"{where}: unknown fact {name!r}; scripts/make_figures.py computes {sorted(_facts)}")
        return str(_facts[name])

    def source(match: re.Match) -> str:
        try:
            code = find_symbol(match["ref"])
        except ValueError as err:
            raise PluginError(f"{where}: {err}") from None
        block = f'```python title="{match["ref"]}"\n{code}\n```'
        return textwrap.indent(block, match["indent"])

    return FACT.sub(fact, SOURCE.sub(source, markdown))
