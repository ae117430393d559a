"""report.html: report.md rendered to one self-contained page, plots embedded as data URIs.

A person opens it in a browser with nothing beside it: no network, no sibling files.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 1em 0; }
code { background: #f6f6f6; padding: 0 3px; }
#verdict + ul { background: #f4f8ff; border-left: 4px solid #36c;
                padding: 0.6em 1.6em; }
"""

_IMAGE = re.compile(r'<img src="([^"]+\.png)"')


def _embed(match: re.Match[str], folder: Path) -> str:
    path = folder / html.unescape(match.group(1))
    if not path.is_file():  # keep the reference; the page shows its alt text
        return match.group(0)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}"'


def markdown_to_html(markdown: str, folder: Path, title: str) -> str:
    """The page for `markdown`, whose relative PNG references are read from `folder`."""
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    body = body.replace("<h2>Verdict</h2>", '<h2 id="verdict">Verdict</h2>', 1)
    body = _IMAGE.sub(lambda m: _embed(m, folder), body)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>\n{body}</body></html>\n")


def write_html(markdown_path: Path, html_path: Path, title: str) -> None:
    """Render `markdown_path` (plots beside it) into the self-contained `html_path`."""
    html_path.write_text(markdown_to_html(markdown_path.read_text(encoding="utf-8"),
                                          markdown_path.parent, title), encoding="utf-8")
