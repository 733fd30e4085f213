"""The bilingual storyteller every lesson talks through: English or Simplified Chinese, printed with rich.

A lesson never calls `print`: it calls `story.say(en, zh)` with both texts side by side in its code, so the two
languages cannot drift apart, and values go in as keyword arguments (formatted into both texts and escaped, so
a value can never be read as rich markup). `story.table`, `story.code` (a function's own source: the code is
the lesson), `story.picture` (a matplotlib figure saved atomically as PNG under --png DIR) and `story.next`
(the closing "next: ..." line) complete the set.
"""
from __future__ import annotations

import inspect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.markup import escape

from ..common import MinigptError, atomic_write_bytes, console

LANGS = ("en", "zh")


@dataclass
class Story:
    lang: str = "en"
    png: Path | None = Path("checkpoints/learn")  # where pictures go; None: draw none
    quick: bool = False
    device: str = "auto"
    data: str | None = None  # --data, for the lessons that read a data set
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lang not in LANGS:
            raise MinigptError(f"--lang {self.lang}: choose en or zh")
        self.png = Path(self.png) if self.png is not None else None

    @property
    def zh(self) -> bool:
        return self.lang == "zh"

    def t(self, en: str, zh: str, **values: Any) -> str:
        """The text in the story's language, with `values` formatted in (not escaped: for plain strings)."""
        return (zh if self.zh else en).format(**values)

    def say(self, en: str, zh: str, **values: Any) -> None:
        """Print a paragraph; `en`/`zh` may hold rich markup; string `values` are escaped before formatting
        (numbers keep their format specs, e.g. {loss:.4f})."""
        text = (zh if self.zh else en).format(**{k: escape(v) if isinstance(v, str) else v
                                                 for k, v in values.items()})
        console.print(text, soft_wrap=True)

    def title(self, en: str, zh: str) -> None:
        console.rule(f"[bold]{escape(self.t(en, zh))}[/]")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
        from rich.table import Table

        table = Table(*headers, title=escape(title) or None, box=None, pad_edge=False)
        for row in rows:
            table.add_row(*(escape(str(v)) for v in row))
        console.print(table)

    def code(self, fn: Callable) -> None:
        """Show a function's source, highlighted: what the lesson is about to run. The listed functions are
        written to fit 80 columns; a narrower terminal crops a line rather than wrapping it to column 0, where
        it would read as broken Python."""
        from rich.syntax import Syntax

        console.print(Syntax(inspect.getsource(fn).rstrip(), "python", theme="ansi_dark", word_wrap=False))

    def picture(self, fig: Any, name: str) -> Path | None:
        """Save a matplotlib figure as DIR/NAME.png (atomically) and say where; None without --png."""
        if self.png is None:
            return None
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        path = self.png / f"{name}.png"
        atomic_write_bytes(path, buf.getvalue())
        self.say("picture: {path}", "图：{path}", path=str(path))
        return path

    def label(self, en: str, zh: str) -> str:
        """Text for a picture: Chinese only when a font with Chinese glyphs is installed."""
        if self.zh:
            from ..lens.plots import cjk_font

            if cjk_font():
                return zh
        return en

    def next(self, en: str, zh: str, **values: Any) -> None:
        """The closing line: the next lesson, or the minigpt command that continues this one."""
        self.say("[bold green]next:[/] " + en, "[bold green]接下来：[/]" + zh, **values)


def figure(story: Story, width: float = 6, height: float = 4):
    """A new matplotlib Figure (no pyplot, no display), with a Chinese font when the story needs one."""
    import matplotlib
    from matplotlib.figure import Figure

    if story.zh:
        from ..lens.plots import cjk_font

        font = cjk_font()
        if font:
            matplotlib.rcParams["font.sans-serif"] = [font, "DejaVu Sans"]
            matplotlib.rcParams["axes.unicode_minus"] = False
    return Figure(figsize=(width, height), layout="constrained")
