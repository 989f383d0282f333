"""mkdocs hooks (mkdocs.yml ``hooks:``) for the generated pages of scripts/build_docs.py.

The equation pages link to source lines (``source/<path>.md#__codelineno-0-N``). Those anchors are made by
``pymdownx.highlight`` (``anchor_linenums``) inside the code block's HTML, which mkdocs' anchor validation
does not see, so ``mkdocs build --strict`` would reject every such link. Registering the ids that the
rendered page really contains keeps the validation strict: a link to a line the file does not have still
fails the build.
"""

from __future__ import annotations

import re
from typing import Any

_ID = re.compile(r'\bid="(__codelineno-[0-9]+-[0-9]+)"')


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    if page.present_anchor_ids is not None:
        page.present_anchor_ids |= set(_ID.findall(html))
    return html
