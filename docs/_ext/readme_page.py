"""MkDocs hook: the repository's README.md as the site page ``readme.md``.

The README holds the measured numbers (benchmarks, result tables); the site's pages link to its
sections instead of copying them. It is generated at build time from the README of the checkout,
so it never goes stale. Paths are rewritten for the page's place in the site: ``docs/x`` becomes
``x``; a relative link to any other file of the repository (not part of the site) keeps only its text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

__all__ = ["on_files", "readme_markdown"]

_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")

NOTE = (
    '!!! note "The repository\'s README"\n'
    "    This page is the repository's `README.md`, included when the site is built.\n\n"
)


def _relink(match: re.Match[str]) -> str:
    target = match["target"]
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return match[0]  # an external URL or an anchor of this page
    if target.startswith("docs/"):
        return f"{match['bang']}[{match['text']}]({target.removeprefix('docs/')})"
    return match["text"]


def readme_markdown(text: str) -> str:
    """The README's Markdown with its links rewritten for the site (see the module docstring)."""
    text = _LINK.sub(_relink, text)
    title, _, rest = text.partition("\n")
    if title.startswith("# "):  # the note goes under the title
        return f"{title}\n\n{NOTE}" + rest.lstrip("\n")
    return NOTE + text


def on_files(files: Files, config: Any) -> Files:
    readme = Path(config["config_file_path"]).parent / "README.md"
    files.append(File.generated(config, "readme.md", content=readme_markdown(readme.read_text(encoding="utf-8"))))
    return files
