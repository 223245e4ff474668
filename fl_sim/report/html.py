"""``index.html`` of a report: sections of tables and figures on one page.

Figures are embedded as base64 data, so the page alone is readable offline (mailed,
attached to a ticket); each also links its PNG file next to the page.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f3f3f3}
figure{margin:1.5em 0}
figcaption{color:#555;font-size:.9em}
img{max-width:100%;border:1px solid #eee}
.warn{color:#a40}
details{margin:1em 0}
nav#contents{background:#f7f7f7;border:1px solid #ddd;padding:.3em 1em;display:inline-block}
.summary td:first-child{font-weight:600}
"""


def fmt(value: Any) -> str:
    """A cell: floats with 4 significant digits, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return str(value)


def table(rows: Iterable[tuple[Any, ...]], header: tuple[str, ...] | None = None,
          css_class: str = "") -> str:
    """An HTML table, every cell escaped."""
    parts = [f'<table class="{html.escape(css_class)}">' if css_class else "<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def figure(path: Path, caption: str) -> str:
    """A figure embedded as data, captioned, linking its PNG file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (
        f'<figure id="{html.escape(path.stem)}"><img alt="{name}" '
        f'src="data:image/png;base64,{data}">'
        f'<figcaption>{html.escape(caption)} (<a href="{name}">{name}</a>)</figcaption></figure>'
    )


def page(
    title: str,
    sections: Iterable[tuple[str, str, str]],
    notes: Iterable[str] = (),
    config: Mapping[str, Any] | None = None,
) -> str:
    """The whole page: title, warnings, a table of contents, then each section.

    ``sections`` are ``(anchor, heading, html)`` in reading order; empty ones are left out.
    """
    sections = [(anchor, heading, content) for anchor, heading, content in sections if content]
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f'<p class="warn">{html.escape(note)}</p>' for note in notes]
    if len(sections) > 1:
        links = "".join(f'<li><a href="#{html.escape(anchor)}">{html.escape(heading)}</a></li>'
                        for anchor, heading, _ in sections)
        body.append(f'<nav id="contents"><ol>{links}</ol></nav>')
    for anchor, heading, content in sections:
        body.append(f'<section id="{html.escape(anchor)}"><h2>{html.escape(heading)}</h2>')
        body.append(content)
        body.append("</section>")
    if config:
        body.append("<details><summary>config.json</summary><pre>")
        body.append(html.escape(json.dumps(config, indent=2, sort_keys=True, default=str)))
        body.append("</pre></details>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )


def figures(items: Iterable[tuple[Path, str]]) -> str:
    """Several figures, one after the other."""
    return "\n".join(figure(path, caption) for path, caption in items)
