"""Rebuild data/tang_poems_5char.txt, the Chinese corpus of `minigpt learn chinese`, from the shared Tang poems.

The selection: every poem by 李白, 杜甫, 王維 or 孟浩然 in ../shared/data/tang_poems.txt (chinese-poetry/chinese-poetry,
全唐诗, public domain) whose lines are all five-character couplets (`XXXXX，XXXXX。`) and that has 2 or 4 of them
(a quatrain or a regulated verse), in file order, converted from Traditional to Simplified characters with OpenCC
(`t2s`), except the few that it would turn into rare characters outside the basic CJK block. Same block format
as the source: title, author, the couplets, an empty line between poems.

    pip install opencc        # only this script needs it
    python scripts/learn_data.py [path/to/tang_poems.txt]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

POETS = ("李白", "杜甫", "王維", "孟浩然")
COUPLET = re.compile(r"^[\u4e00-\u9fff]{5}，[\u4e00-\u9fff]{5}。$")
ROOT = Path(__file__).resolve().parents[1]


def select(text: str) -> list[list[str]]:
    """The poems kept, each as [title, author, couplet, ...] in Traditional characters."""
    poems = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) in (4, 6) and lines[1] in POETS and all(COUPLET.match(line) for line in lines[2:]):
            poems.append(lines)
    return poems


def simplify(text: str, convert) -> str:
    """OpenCC t2s, except that a character it would turn into a rare one outside the basic CJK block (e.g.
    鳷 -> U+2B6DB, which few fonts can draw) stays as written."""
    out = convert(text)
    if len(out) != len(text):
        return out
    basic = lambda ch: "\u4e00" <= ch <= "\u9fff"  # noqa: E731
    return "".join(new if basic(new) or not basic(old) else old for new, old in zip(out, text))


def main() -> None:
    import opencc

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "tang_poems.txt"
    convert = opencc.OpenCC("t2s").convert
    poems = select(source.read_text(encoding="utf-8"))
    text = "\n\n".join(simplify("\n".join(p), convert) for p in poems) + "\n"
    out = ROOT / "data" / "tang_poems_5char.txt"
    out.write_text(text, encoding="utf-8")
    print(f"{len(poems)} poems, {len(text):,} characters, {len(set(text)):,} distinct -> {out}")


if __name__ == "__main__":
    main()
