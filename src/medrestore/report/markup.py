"""Markdown and HTML assembly: tables (a cell ``**x**`` is the column's best, `` `x` `` code) and the
self-contained page."""

from __future__ import annotations

import html

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}.best{font-weight:bold;background:#e8f4e8}img{max-width:100%}"
    "table.lineage td{text-align:left;font-family:monospace;font-size:12px}figcaption{font-size:13px;color:#555}"
)


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def html_table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    out = [f"<table class='{cls}'><thead><tr>", "".join(f"<th>{html.escape(h)}</th>" for h in header),
           "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for c in r:
            if c.startswith("**"):
                cells.append(f"<td class='best'>{html.escape(c.strip('*'))}</td>")
            elif c.startswith("`") and c.endswith("`"):
                cells.append(f"<td><code>{html.escape(c.strip('`'))}</code></td>")
            else:
                cells.append(f"<td>{html.escape(c)}</td>")
        out.append(f"<tr>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def html_page(parts: list[str], title: str = "medrestore report") -> str:
    """The whole ``index.html``: ``parts`` in one page with its style sheet inline."""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
