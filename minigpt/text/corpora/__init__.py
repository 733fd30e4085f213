"""The built-in corpora: text every machine that runs minigpt already has, so nothing is downloaded.

`CORPORA` maps a `--data` name to its module; each module gives `documents(split) -> (name, text)` pairs,
split by module so validation text is genuinely unseen, and a `fingerprint()` that changes when its text would.
"""
from __future__ import annotations

from typing import Iterator

from . import pydocs, stdlib

CORPORA = {"pydocs": pydocs, "stdlib": stdlib}


def documents(name: str, split: str | None = None) -> Iterator[tuple[str, str]]:
    return CORPORA[name].documents(split)


def fingerprint(name: str) -> str:
    return CORPORA[name].fingerprint()
