"""The documentation stays inside the repository: every Markdown link resolves to a file of the checkout.

The strict docs build (``scripts/run_tests.sh``) checks the site's own links; these checks are cheap,
need no docs extra, and also cover the README as GitHub renders it and the README sections the site
links to (``readme.md#...``, the page ``docs/_ext/readme_page.py`` generates from README.md).
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: folders that are not part of the repository's content
SKIP = {".git", ".venv", "site", "runs", "build", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`+[^`\n]*`+")


def _files(suffixes: tuple[str, ...]) -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP and not d.endswith(".egg-info"))
        out.extend(Path(folder) / f for f in sorted(files) if f.endswith(suffixes))
    return out


MARKDOWN = _files((".md",))


def _links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [m["target"] for m in LINK.finditer(text)]


def slug(heading: str) -> str:
    """The anchor Python-Markdown's ``toc`` extension (MkDocs) gives a heading."""
    text = re.sub(r"[`*_]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def test_markdown_files_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in MARKDOWN}
    assert {"README.md", "docs/index.md", "docs/contracts.md"} <= names


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve_inside_the_repository(path: Path) -> None:
    """No link leaves the checkout, and every relative link or image names a file that exists (a link
    from ``docs/`` to ``readme.md`` means the README, with an anchor that is one of its headings)."""
    problems = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor of the same page
        file, _, anchor = target.partition("#")
        if file.startswith("/"):
            problems.append(f"{target}: absolute path")
            continue
        resolved = (path.parent / file).resolve()
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
            continue
        docs = ROOT / "docs"
        if resolved == docs / "readme.md" and path.resolve().is_relative_to(docs):
            if anchor and anchor not in _anchors(ROOT / "README.md"):
                problems.append(f"{target}: README.md has no heading with anchor #{anchor}")
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file")
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


REPO_PATH = re.compile(r"`((?:mtrl|envs|agents|scripts|configs|tests|docs)/[\w./-]*)`")


@pytest.mark.parametrize("path", [p for p in MARKDOWN if p.parent.name in ("docs", "api")], ids=lambda p: p.name)
def test_repository_paths_named_by_the_docs_exist(path: Path) -> None:
    """A file or folder the site names in code (``mtrl/engine/rules.py``) exists: pages go stale when
    code moves, and this says where."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    missing = sorted({m[1] for m in REPO_PATH.finditer(text) if not (ROOT / m[1]).exists()})
    assert not missing, f"{path.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_nothing_refers_to_documents_outside_the_repository() -> None:
    """The documents the code once cited lived beside the repository (``../shared/docs``); none may be
    cited again, in any text file."""
    pattern = re.compile(r"\.\./shared\b|shared/docs/|docs/DESIGN\.md|docs/metaworld\.md|CONTRACTS\.md")
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in _files((".md", ".py", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".txt"))
        if p.resolve() != Path(__file__).resolve()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits


def test_slug_matches_mkdocs() -> None:
    toc = pytest.importorskip("markdown.extensions.toc")
    for heading in ("Benchmarks (measured here: 2-core CPU, torch 2.13 CPU build)", "Dense multi-task vision"):
        assert slug(heading) == toc.slugify(heading, "-")
    assert slug("Results on `synthetic` (CPU, small model, 3 seeds)") == "results-on-synthetic-cpu-small-model-3-seeds"


def test_rst_markup_becomes_markdown() -> None:
    """The docs build's Griffe extension (docs/_ext/griffe_rst.py): roles, doctests, literal blocks, tables."""
    pytest.importorskip("griffe")
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_rst", ROOT / "docs" / "_ext" / "griffe_rst.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "\n".join([
        "See :func:`~envs.task_sets.resolve_tasks` and :meth:`run <a.B.run>`.",
        "",
        ">>> x = 1",
        "... y = 2",
        "after",
        "",
        "Formula::",
        "",
        "    y = x",
        "",
        "=====  =====",
        "key    value",
        "=====  =====",
        "``a``  one",
        "=====  =====",
    ])  # fmt: skip
    out = module.rst_to_markdown(text)
    assert '<autoref identifier="envs.task_sets.resolve_tasks" optional>`resolve_tasks`</autoref>' in out
    assert '<autoref identifier="a.B.run" optional>`run`</autoref>' in out
    assert "```pycon\n>>> x = 1\n... y = 2\n```\nafter" in out
    assert "Formula:\n\n    y = x" in out
    assert "| key | value |\n| --- | --- |\n| ``a`` | one |" in out
    assert module.comment_docstring(["#: first", "#: second", "x: int = 1"], 3) == "first\nsecond"
    assert module.comment_docstring(["y = 2  #: inline"], 1) == "inline"
    assert module.comment_docstring(["# plain", "x = 1"], 2) is None
