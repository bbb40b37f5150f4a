"""Griffe extension for the docs build: the reST markup of mtrl's docstrings as Markdown.

The code's docstrings are Google-style sections (``Args:``, ``Returns:``) written with reST inline
markup. mkdocstrings renders docstrings as Markdown, so before they are parsed this extension turns

* cross-reference roles (``:func:`make_mt_envs```, ``:class:`~envs.vector.MultiTaskVecEnv```,
  ``:meth:`title <target>```) into *optional* autorefs: a link where the target is rendered somewhere
  in the site, plain code otherwise (never a warning, so ``mkdocs build --strict`` stays clean);
  the target is resolved in the docstring owner's scope, as Sphinx would;
* doctest lines (``>>> ...`` / ``... ...``) into fenced ``pycon`` blocks (Markdown would make them
  block quotes);
* ``text::`` before a literal block into ``text:`` (the indented block stays a code block);
* reST simple tables (``=====  =====`` borders) into Markdown tables.

It also gives attributes documented Sphinx-style, by ``#:`` comments above the assignment (every
config field is), those comments as their docstrings: Griffe reads only string literals.

Configured in ``mkdocs.yml`` (``options.extensions``); nothing in the package imports it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

__all__ = ["RstToMarkdown", "comment_docstring", "rst_to_markdown"]

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|ref|type):`(?P<body>[^`]+)`")
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")
_BORDER = re.compile(r"^(?P<indent>[ \t]*)=+(?: +=+)+[ \t]*$")


def _resolve(owner: griffe.Object | None, name: str) -> str:
    """The canonical path ``name`` means in ``owner``'s scope (the owner, its parents up to its module,
    then absolute); ``name`` itself when it does not resolve."""
    if owner is None:
        return name
    head, _, rest = name.partition(".")
    full = name
    scope: griffe.Object | None = owner
    while scope is not None:
        member = scope.members.get(head)
        if member is not None:
            base = member.target_path if member.is_alias else member.path
            full = f"{base}.{rest}" if rest else base
            break
        scope = None if scope.is_module else scope.parent
    try:
        found = owner.modules_collection[full]
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return full
    try:
        return str(found.canonical_path)
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return full


def _role(match: re.Match[str], owner: griffe.Object | None) -> str:
    body = match["body"].strip()
    titled = _TITLED.match(body)
    if titled:
        title, target = titled["title"], titled["target"].strip()
    else:
        target = body.lstrip("~!")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
    identifier = _resolve(owner, target)
    return f'<autoref identifier="{html.escape(identifier)}" optional>`{title}`</autoref>'


def _fence_doctests(lines: list[str]) -> list[str]:
    out: list[str] = []
    in_fence, indent = False, None  # inside a ``` block of the text; the indent of an open pycon fence
    for line in lines:
        stripped = line.lstrip()
        if indent is not None and not stripped.startswith((">>>", "...")):
            out.append(f"{indent}```")
            indent = None
        if stripped.startswith("```"):
            in_fence = not in_fence
        elif indent is None and not in_fence and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
        out.append(line)
    if indent is not None:
        out.append(f"{indent}```")
    return out


def _tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        border = _BORDER.match(lines[i])
        ends = [j for j in range(i + 1, len(lines)) if _BORDER.match(lines[j])][:2] if border else []
        if not border or len(ends) < 2:
            out.append(lines[i])
            i += 1
            continue
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]

        def cells(line: str, starts: list[int] = starts) -> list[str]:
            """A row cut at the columns' start positions (the last column runs to the end of the line)."""
            return [line[a:b].strip() for a, b in zip(starts, [*starts[1:], len(line)], strict=True)]

        indent = border["indent"]
        header = [cells(line) for line in lines[i + 1 : ends[0]] if line.strip()]
        body = [cells(line) for line in lines[ends[0] + 1 : ends[1]] if line.strip()]
        rows = [*header[:1], ["---"] * len(starts), *header[1:], *body]
        out.extend(f"{indent}| " + " | ".join(r) + " |" for r in rows)
        i = ends[1] + 1
    return out


def rst_to_markdown(text: str, owner: griffe.Object | None = None) -> str:
    """``text`` (a docstring) with its reST markup rewritten as Markdown (see the module docstring)."""
    text = _ROLE.sub(lambda m: _role(m, owner), text)
    text = re.sub(r"(?<=\S)::[ \t]*\n(?=[ \t]*\n)", ":\n", text)
    text = re.sub(r"^([ \t]*)::[ \t]*\n(?=[ \t]*\n)", "", text, flags=re.MULTILINE)
    return "\n".join(_tables(_fence_doctests(text.split("\n"))))


def comment_docstring(lines: list[str], lineno: int) -> str | None:
    """The ``#:`` comment block directly above line ``lineno`` (1-based) of ``lines``, or the ``#:``
    comment at the end of that line; None when there is neither."""
    block: list[str] = []
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        block.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    if not block and 0 < lineno <= len(lines) and "  #: " in lines[lineno - 1]:
        block = [lines[lineno - 1].split("  #: ", 1)[1].strip()]
    return "\n".join(block) if block else None


def _add_comment_docstring(obj: griffe.Object) -> None:
    if not obj.is_attribute or obj.docstring is not None or obj.lineno is None:
        return
    try:
        lines = obj.lines_collection[obj.filepath]  # type: ignore[index]
    except (KeyError, ValueError, TypeError):
        return
    text = comment_docstring(lines, obj.lineno)
    if text:
        obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of a loaded package once it is complete (names resolve then), after
    giving ``#:``-commented attributes their comment as docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            _add_comment_docstring(obj)
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value, obj)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
