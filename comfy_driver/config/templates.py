"""Every string a series file holds is a jinja2 template, rendered in the sandbox of `sandbox.py`.

Most strings hold no template at all (an id, a path, a prompt without variables): a string in which no
tag, variable or comment can start (no `{`) renders to itself as jinja2 would render it (line ends
made `\\n`, one final line end dropped), without loading jinja2, which a run of such a series then
never imports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_SOURCE = 100_000  # the longest template text (the sandbox refuses longer ones)
_NEWLINE = re.compile(r"\r\n|\r|\n")


def render(text: str, context: Mapping[str, Any], *, where: str, field: str) -> str:
    """Render one template string; any refusal or template error is a UserError at `where: field`."""
    if "{" not in text and len(text) <= MAX_SOURCE:
        lines = _NEWLINE.split(text)
        if lines[-1] == "":
            del lines[-1]
        return "\n".join(lines)
    from comfy_driver.config import sandbox

    return sandbox.render(text, context, where=where, field=field)
