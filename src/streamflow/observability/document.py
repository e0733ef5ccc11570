"""A small document model, built once and rendered twice: Markdown and self-contained HTML.

The monitoring report builds its sections as data (:class:`Document` of :class:`Section` s holding
:class:`Bullets`, :class:`Note`, :class:`Table` and :class:`Image` blocks); :func:`to_markdown` and
:func:`to_html` render that one structure, so both files always carry the same content.

Inline text is a :data:`Line`: a tuple of plain strings, :class:`Code` spans and :class:`Styled`
spans (an HTML class, e.g. an alert state's colour; plain text in Markdown).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Styled:
    text: str
    style: str  # HTML class name


Inline = str | Code | Styled
Line = tuple[Inline, ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[Line, ...]


@dataclass(frozen=True)
class Note:
    """An emphasised remark: an error, "no data", what a column means."""

    line: Line


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Inline, ...], ...]


@dataclass(frozen=True)
class Image:
    path: Path
    alt: str


Block = Bullets | Note | Table | Image


@dataclass
class Section:
    title: str
    level: int  # 2 = ##, 3 = ###, ...
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    intro: list[Block]
    sections: list[Section]


def line(*parts: Inline) -> Line:
    return tuple(parts)


# --------------------------------------------------------------------------- Markdown
def _md_inline(part: Inline, *, cell: bool = False) -> str:
    text = f"`{part.text}`" if isinstance(part, Code) else part.text if isinstance(part, Styled) else part
    # in a GFM table cell a pipe splits the cell even inside a code span: always escaped there
    return text.replace("|", "\\|").replace("\n", " ") if cell else text


def _md_line(parts: Sequence[Inline], *, cell: bool = False) -> str:
    return "".join(_md_inline(p, cell=cell) for p in parts)


def _md_block(block: Block, images_href: str) -> list[str]:
    if isinstance(block, Bullets):
        return [f"- {_md_line(item)}" for item in block.items]
    if isinstance(block, Note):
        return [f"_{_md_line(block.line)}_"]
    if isinstance(block, Image):
        return [f"![{block.alt}]({images_href}/{block.path.name})"]
    out = ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
    out += ["| " + " | ".join(_md_inline(c, cell=True) for c in row) + " |" for row in block.rows]
    return out


def to_markdown(doc: Document, *, images_href: str) -> str:
    """Markdown; images link to ``images_href/<file name>`` (relative to the .md file)."""
    out = [f"# {doc.title}", ""]
    for block in doc.intro:
        out += [*_md_block(block, images_href), ""]
    for section in doc.sections:
        out += [f"{'#' * section.level} {section.title}", ""]
        for block in section.blocks:
            out += [*_md_block(block, images_href), ""]
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- HTML
_CSS = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
    "th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}code{background:#f6f6f6}"
    ".firing{color:#c00;font-weight:bold}.pending{color:#c60}.template{color:#666;font-style:italic}"
)


def _html_inline(part: Inline) -> str:
    if isinstance(part, Code):
        return f"<code>{html.escape(part.text)}</code>"
    if isinstance(part, Styled):
        return f'<span class="{html.escape(part.style)}">{html.escape(part.text)}</span>'
    return html.escape(part)


def _html_line(parts: Sequence[Inline]) -> str:
    return "".join(_html_inline(p) for p in parts)


def _html_block(block: Block) -> str:
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_html_line(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Note):
        return f"<p><em>{_html_line(block.line)}</em></p>"
    if isinstance(block, Image):
        encoded = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{encoded}">'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
    body = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(doc: Document) -> str:
    """One self-contained page: images embedded as data URIs."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
        *[_html_block(b) for b in doc.intro],
    ]
    for section in doc.sections:
        level = min(max(section.level, 1), 6)
        parts.append(f"<h{level}>{html.escape(section.title)}</h{level}>")
        parts += [_html_block(b) for b in section.blocks]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
