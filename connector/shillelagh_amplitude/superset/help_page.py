"""The connection help served by Superset itself: this project's README section "Connecting" (with "In Superset"
and the form's fields), rendered from the installed package's own description. No network is needed, so the
form's help link works offline and in air-gapped deployments. :func:`register` adds the page
(``FLASK_APP_MUTATOR``, with :mod:`.help_link`).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import metadata
from typing import Any

import markdown

DISTRIBUTION = "shillelagh-amplitude"
PATH = "/amplitude/connecting/"
#: Where the form's help link leads: the page, at the heading on the form (the anchor of "### In Superset").
LINK = f"{PATH}#in-superset"
SECTION = "## Connecting"


def readme() -> str:
    """The README as the installed package carries it (its long description)."""
    meta = metadata(DISTRIBUTION)
    return meta.get_payload() or meta.get("Description", "")  # type: ignore[attr-defined]


def section(text: str) -> str:
    """From the "Connecting" heading to the next second-level heading."""
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


@cache
def page() -> str:
    """The section as a plain HTML page (no script, no inline style: Superset's CSP applies)."""
    body = markdown.markdown(section(readme()), extensions=["tables", "fenced_code", "toc"])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Connecting Amplitude (shillelagh-amplitude)</title></head>\n<body>\n{body}\n</body></html>\n")


def register(app: Any) -> None:
    """Serve :func:`page` at :data:`PATH` (public, like the README it renders)."""
    app.add_url_rule(PATH, "amplitude_connecting_help", lambda: (page(), 200, {"Content-Type": "text/html"}))
