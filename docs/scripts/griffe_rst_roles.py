"""A Griffe extension: render the reStructuredText bits of dxdt's numpydoc docstrings.

The docstrings follow numpydoc, whose text is reStructuredText; mkdocstrings renders it
as Markdown. This extension rewrites, before parsing, what Markdown would show verbatim:

- ``.. math::`` blocks (indented, or on the directive's line) become ``$$ ... $$``
  display math (``pymdownx.arithmatex``);
- ``:math:`x``` becomes inline math ``$x$``;
- ``:class:`~pkg.Name``` (also ``:func:``, ``:mod:``, ``:meth:``, ``:attr:``,
  ``:data:``, ``:exc:``, ``:obj:``) becomes the code span ``Name`` (``pkg.Name``
  without the ``~``);
- simple tables (columns under ``=====  ===`` borders) become Markdown tables;
- a parameter entry naming several parameters (``rtol, atol : float``) becomes one
  entry per name with the same text, because Griffe gives all of them the default of
  the first (``atol`` would show ``rtol``'s default).

The source files are not touched. Loaded by ``mkdocs.yml``
(``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<inline>.*)$")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _math_blocks(text: str) -> str:
    """Replace each ``.. math::`` directive and its indented body by ``$$`` lines."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, inline = match["indent"], match["inline"].strip()
        body = [inline] if inline else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            if lines[i].strip():
                body.append(lines[i].strip())
            elif body and i + 1 < len(lines) and lines[i + 1].strip():
                if _indent(lines[i + 1]) <= len(indent):
                    break
            i += 1
        out += [f"{indent}$$", *(indent + line for line in body), f"{indent}$$", ""]
    return "\n".join(out)


_BORDER = re.compile(r"^[ \t]*=+(?:[ \t]+=+)+[ \t]*$")


def _simple_tables(text: str) -> str:
    """Replace RST simple tables (top border, header, border, rows, bottom border)."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        ends = [j for j in range(i + 1, min(len(lines), i + 200)) if _BORDER.match(lines[j])][:2]
        if not (_BORDER.match(lines[i]) and len(ends) == 2):
            out.append(lines[i])
            i += 1
            continue
        spans = [m.span() for m in re.finditer(r"=+", lines[i])]

        def cells(line: str) -> list[str]:
            bounds = [start for start, _ in spans[1:]] + [None]
            return [line[start:end].strip().replace("|", "\\|") or " "
                    for (start, _), end in zip(spans, bounds)]

        header, rows = lines[i + 1 : ends[0]], lines[ends[0] + 1 : ends[1]]
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        out += ["", *(indent + "| " + " | ".join(cells(h)) + " |" for h in header),
                indent + "|" + "|".join("---" for _ in spans) + "|",
                *(indent + "| " + " | ".join(cells(r)) + " |" for r in rows if r.strip()), ""]
        i = ends[1] + 1
    return "\n".join(out)


_SECTION = re.compile(r"^[ \t]*(Parameters|Other Parameters|Attributes)[ \t]*$")
_ANY_SECTION = re.compile(r"^[ \t]*-{3,}[ \t]*$")
_MULTI_NAME = re.compile(
    r"^(?P<indent>[ \t]*)(?P<names>\*{0,2}\w+(?:[ \t]*,[ \t]*\*{0,2}\w+)+)(?P<rest>[ \t]*:.*)?$"
)


def _split_names(text: str) -> str:
    """``a, b : T`` entries of parameter sections as one entry per name."""
    lines, out, i, in_section = text.splitlines(), [], 0, False
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and _ANY_SECTION.match(lines[i + 1]) and line.strip():
            in_section = bool(_SECTION.match(line))
            out += [line, lines[i + 1]]
            i += 2
            continue
        match = _MULTI_NAME.match(line) if in_section else None
        if not match:
            out.append(line)
            i += 1
            continue
        indent = len(match["indent"])
        body, i = [], i + 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        for name in re.split(r"[ \t]*,[ \t]*", match["names"]):
            out += [match["indent"] + name + (match["rest"] or ""), *body]
    return "\n".join(out)


def rewrite(text: str) -> str:
    """The docstring ``text`` with RST math, roles and tables in Markdown form."""
    text = _split_names(text)
    text = _simple_tables(text)
    text = _math_blocks(text) if ".. math::" in text else text
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    return _ROLE.sub(_role, text)


class RstRoles(griffe.Extension):
    """Rewrite every docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
