"""A griffe extension for the API reference (mkdocs.yml): the docstrings' reStructuredText math as Markdown.

The package's docstrings print each equation in a ``.. math::`` block and inline math as ``:math:`x```
(see CLAUDE.md, "Docstring of an equation"). mkdocstrings renders Markdown, where those would show as raw
text, so this extension rewrites them into ``$$ ... $$`` blocks and ``$x$`` spans, which
``pymdownx.arithmatex`` hands to KaTeX. Cross-reference roles (``:class:`~a.b.C```) become inline code.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`~?([^`]+)`")
_INLINE_MATH = re.compile(r":math:`([^`]+)`")


def rst_math_to_markdown(text: str) -> str:
    """``.. math::`` blocks become one ``$$`` block per blank-line-separated equation; roles become spans."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != ".. math::":
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        body, i = [], i + 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            body.append(lines[i])
            i += 1
        out += _display_blocks(body, indent)
    converted = "\n".join(out)
    converted = _INLINE_MATH.sub(lambda m: f"${m.group(1).strip()}$", converted)
    return _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1]}`", converted)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _display_blocks(body: list[str], indent: str) -> list[str]:
    """Each group of non-blank lines of a math body as its own ``$$`` block, at the directive's indent."""
    # A trailing blank line belongs to the text after the block, not to the math.
    while body and not body[-1].strip():
        body.pop()
    groups: list[list[str]] = [[]]
    for line in body:
        if line.strip():
            groups[-1].append(line.strip())
        elif groups[-1]:
            groups.append([])
    out = []
    for group in groups:
        if group:
            out += ["", f"{indent}$$", *(f"{indent}{line}" for line in group), f"{indent}$$", ""]
    return out


class RestructuredMath(Extension):
    """Rewrite every object's docstring once, when griffe creates the object."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_math_to_markdown(obj.docstring.value)
