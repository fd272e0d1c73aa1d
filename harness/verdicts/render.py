"""Report pages as blocks (headings, paragraphs, tables, plots), rendered twice: Markdown with
plots as PNG files beside it, and one self-contained HTML file with the same plots embedded as
base64, so it can be mailed or attached to a CI run on its own.

The study report (`harness.verdicts.report`) and the release gate (`harness.verdicts.gate`) build their pages
from these blocks; neither writes Markdown or HTML itself.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.util.files import write_atomic


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str
    warn: bool = False


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: plots/<name>.png beside report.md
    title: str
    png: bytes


@dataclass(frozen=True)
class Details:
    """Blocks folded away behind a one-line summary (HTML `<details>`), for the reader who
    wants everything without making everyone scroll past it."""

    summary: str
    blocks: Sequence[Heading | Para | Table | Plot]


Block = Heading | Para | Table | Plot | Details

# Wide tables scroll inside their own box and long cells wrap, so the page never scrolls
# sideways; plots take the page's width up to their natural size.
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1, h2, h3 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.table { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top;
         max-width: 36em; overflow-wrap: anywhere; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: .6em 1em; }
figure { margin: 1em 0; }
img { max-width: 100%; height: auto; }
th { white-space: nowrap; }
summary { cursor: pointer; color: #444; margin: .5em 0; }
"""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return fmt_num(value)
    return str(value)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    """Markdown with plots referenced as `plots/<name>.png` (written by `write_report`)."""
    return "\n".join([f"# {title}", "", *_markdown(blocks)])


def _markdown(blocks: Sequence[Block]) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [("> **" + b.text + "**") if b.warn else b.text, ""]
        elif isinstance(b, Table):
            esc = [[_cell(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in b.rows]
            out.append("| " + " | ".join(b.headers) + " |")
            out.append("|" + "---|" * len(b.headers))
            out += ["| " + " | ".join(row) + " |" for row in esc]
            out.append("")
        elif isinstance(b, Plot):
            out += [f"![{b.title}](plots/{b.name}.png)", ""]
        elif isinstance(b, Details):
            out += [f"<details><summary>{html.escape(b.summary)}</summary>", ""]
            out += [*_markdown(b.blocks), "</details>", ""]
    return out


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """One self-contained page: inline CSS, plots as data: URIs, nothing fetched."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        *_html(blocks),
        "</body></html>",
    ]
    return "\n".join(out)


def _html(blocks: Sequence[Block]) -> list[str]:
    e = html.escape
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f'<p class="warn">{e(b.text)}</p>' if b.warn else f"<p>{e(b.text)}</p>")
        elif isinstance(b, Table):
            out.append('<div class="table"><table><thead><tr>')
            out += [f"<th>{e(h)}</th>" for h in b.headers]
            out.append("</tr></thead><tbody>")
            for row in b.rows:
                out.append("<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in row) + "</tr>")
            out.append("</tbody></table></div>")
        elif isinstance(b, Plot):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(b.title)}">'
                f"<figcaption>{e(b.title)}</figcaption></figure>"
            )
        elif isinstance(b, Details):
            out += [f"<details><summary>{e(b.summary)}</summary>", *_html(b.blocks), "</details>"]
    return out


def write_report(out_dir: Path, title: str, blocks: Sequence[Block]) -> tuple[Path, Path]:
    """Write report.md (+ plots/*.png) and report.html into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [b for b in _flat(blocks) if isinstance(b, Plot)]
    if plots:
        (out_dir / "plots").mkdir(exist_ok=True)
        for p in plots:
            (out_dir / "plots" / f"{p.name}.png").write_bytes(p.png)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_atomic(md_path, render_markdown(title, blocks))
    write_atomic(html_path, render_html(title, blocks))
    return md_path, html_path


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x != 0 and (abs(x) < 10**-(digits) or abs(x) >= 1e5):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


def figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _flat(blocks: Sequence[Block]) -> list[Block]:
    return [x for b in blocks for x in (_flat(b.blocks) if isinstance(b, Details) else [b])]
