"""One self-contained HTML page: every figure inlined (base64 PNG), also written beside it as PNG
and SVG so a paper can take the vector version. No scripts, no external CSS or fonts: it opens
from an e-mail attachment or an MLflow artefact view the same way."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
tr.best td { background: #eaf6ea; } tr.worst td { background: #fbeaea; }
p.caption { color: #555; font-size: .88em; margin-top: 0; max-width: 60em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.meta { color: #555; font-size: .9em; } code { background: #f6f6f6; padding: 0 .2em; }
.desc { background: #f8f8f8; border-left: 3px solid #aaa; padding: .5em 1em; white-space: pre-wrap; }
"""


def esc(x) -> str:
    return html.escape(str(x))


class Page:
    """Sections of headings, paragraphs, tables and figures; `write` puts the page and its files in `out`."""

    def __init__(self, title: str, out: Path) -> None:
        self.title, self.out = title, Path(out)
        self.parts: list[str] = []
        self.files: list[Path] = []  # every figure file written (PNG and SVG), for MLflow
        self.figures: list[
            tuple[object, str]
        ] = []  # (matplotlib Figure, name), for MLflow's log_figure

    def h2(self, text: str) -> None:
        self.parts.append(f"<h2>{esc(text)}</h2>")

    def p(self, text: str, cls: str = "") -> None:
        self.parts.append(f"<p{f' class={cls!r}' if cls else ''}>{esc(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def table(
        self,
        header: list[str],
        rows: list[list],
        caption: str,
        row_classes: list[str] | None = None,
        left: int = 1,
    ) -> None:
        """`left` leading columns are text (left-aligned); a caption (split protocol, n) goes under it."""
        th = "".join(
            f"<th{' class=l' if i < left else ''}>{esc(h)}</th>" for i, h in enumerate(header)
        )
        body = []
        for r, row in enumerate(rows):
            cls = (row_classes or [""] * len(rows))[r]
            tds = "".join(
                f"<td{' class=l' if i < left else ''}>{esc(v)}</td>" for i, v in enumerate(row)
            )
            body.append(f"<tr{f' class={cls}' if cls else ''}>{tds}</tr>")
        self.parts.append(
            f"<table><tr>{th}</tr>{''.join(body)}</table><p class=caption>{esc(caption)}</p>"
        )

    def figure(self, fig, name: str, caption: str) -> Path:
        """A matplotlib Figure (made without pyplot: no global state): PNG (inlined) and SVG in `figures/`."""
        from ..io import atomic_path

        d = self.out / "figures"
        d.mkdir(parents=True, exist_ok=True)
        png, svg = d / f"{name}.png", d / f"{name}.svg"
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        with atomic_path(svg) as tmp:
            fig.savefig(tmp, format="svg", bbox_inches="tight")
        self.files += [png, svg]
        self.figures.append((fig, name))
        self.image(png, caption, already_listed=True)
        return png

    def image(
        self, png: Path, caption: str, already_listed: bool = False, name: str | None = None
    ) -> None:
        """A PNG made elsewhere (an image grid from MLflow), copied into `figures/` (as `name`) and inlined."""
        png = Path(png)
        if not already_listed:
            from ..io import write_bytes

            dst = self.out / "figures" / (name or png.name)
            write_bytes(dst, png.read_bytes())
            self.files.append(dst)
            png = dst
        data = base64.b64encode(png.read_bytes()).decode()
        self.parts.append(
            f"<figure><img alt='{esc(png.stem)}' src='data:image/png;base64,{data}'>"
            f"<figcaption class=caption><p class=caption>{esc(caption)}</p></figcaption></figure>"
        )

    def write(self, meta: list[str]) -> Path:
        from ..io import write_text

        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        head = "".join(
            f"<div class=meta>{esc(m)}</div>"
            for m in [*meta, f"generated {stamp} by cytoray report"]
        )
        page = (
            "<!doctype html><html lang=en><head><meta "
            f"charset=utf-8><title>{esc(self.title)}</title><style>{CSS}</style>"
            f"</head><body><h1>{esc(self.title)}</h1>{head}{''.join(self.parts)}</body></html>\n"
        )
        path = self.out / "report.html"
        write_text(path, page)
        return path
