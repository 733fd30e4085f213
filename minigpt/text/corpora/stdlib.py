"""The built-in offline corpus `stdlib`: the Python standard library's own source code, and its documentation.

Why: it is on every machine that runs minigpt (no download), it is about 9 MB of real code and prose (4.5x
`pydocs`, the docstrings alone), and it puts each function's name, signature and docstring side by side, which is
what the built-in chat questions ask about. A 30-minute CPU speedrun reads about 10-20M tokens: on `pydocs` alone
(0.5M training tokens) that is 20 passes and the model overfits after the first 40% of its budget.

What is in it: every `.py` file of the standard library outside tests, demos, vendored and generated code (the
folders `pydocs` skips; private modules such as `_pydecimal` are kept: they are real code), read as UTF-8 text,
never imported, each as one document headed by its path (`# json/__init__.py`); then the `pydocs` documents
(docstrings rendered as `json.dumps(obj, ...)` + text, and the pydoc topics), so the documentation's own
format is learnt too. Both are split by module with `pydocs.split_of`, so a module is in the same split in both
corpora: validation text is unseen in either, and a model trained on `stdlib` can be measured on `pydocs`'s
held-out modules.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from .pydocs import SKIP_PARTS, module_name, split_of, stdlib_dir
from .pydocs import documents as pydocs_documents



@lru_cache(maxsize=1)
def source_files(root: str | None = None) -> tuple[tuple[str, Path], ...]:
    """(module name, path) of every source file, in sorted path order."""
    base = Path(root) if root else stdlib_dir()
    out = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).parts
        if any(p in SKIP_PARTS or p.startswith("config-") for p in rel):
            continue
        out.append((module_name(path, base), path))
    return tuple(out)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # a file that is not UTF-8 text is left out
        return None


def fingerprint() -> str:
    """Changes with the Python version and installation (what the corpus is read from)."""
    return f"stdlib:2:{sys.version.split()[0]}:{stdlib_dir()}"


def documents(split: str | None = None) -> Iterator[tuple[str, str]]:
    """(name, text): each source file (`path:<relative path>`), then every `pydocs` document, of `split`."""
    base = stdlib_dir()
    for module, path in source_files():
        if split is not None and split_of(module) != split:
            continue
        text = _read(path)
        if text and text.strip():
            rel = path.relative_to(base).as_posix()
            yield f"path:{rel}", f"# {rel}\n{text}"
    yield from pydocs_documents(split)
