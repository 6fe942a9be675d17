"""The one page shell of perflab's HTML pages (the report's index, the history page): the
document head, the shared look, and a page's own styles on top."""

from __future__ import annotations

import html

__all__ = ["page"]

_BASE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
.meta { color: #666; font-size: 0.85em; margin: 0; }
.warning { background: #fff4d6; border: 1px solid #e0c070; border-radius: 4px; padding: 0.5em 0.8em; }
code { background: #f3f3f3; padding: 0 0.2em; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 4px 6px; text-align: left; }
img { max-width: 100%; }
"""


def page(title: str, body: str, *, style: str = "") -> str:
    """A whole HTML document: ``body`` (already escaped HTML) under the shared styles and
    the page's own ``style``."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_BASE_STYLE}{style}</style></head><body>
{body}
</body></html>
"""
