"""The built-in offline corpus `stdlib`: the Python standard library's own source code, its test suite, and its
documentation.

Why: it is on every machine that runs minigpt (no download), it is about 28 MB of real code and prose (14x
`pydocs`, the docstrings alone), and it puts each function's name, signature and docstring side by side, which is
what the built-in chat questions ask about; the test suite shows every module called the way its authors meant
it. A 30-minute CPU speedrun reads about 13M tokens: on `pydocs` alone (0.5M training tokens) that is 25 passes
and the model overfits after the first 40% of its budget; on the library without its tests (2.8M) 4.7 passes;
with them (7.8M) 1.7.

What is in it: every `.py` file of the standard library outside demos, vendored and generated code (the folders
`pydocs` skips; private modules such as `_pydecimal` are kept: they are real code), read as UTF-8 text, never
imported, each as one document headed by its path (`# json/__init__.py`); then the test suite's files (`test/`,
`ctypes/test/`...; Debian ships them apart, in libpython3.x-testsuite, and without them the corpus is the 8 MB
library and the docs); then the `pydocs` documents (docstrings rendered as `json.dumps(obj, ...)` + text, and the
pydoc topics), so the documentation's own format is learnt too. All are split by module with `pydocs.split_of`, so
a module is in the same split in both corpora, and a test file goes with the module it tests (`test_split`):
validation text is unseen in either, and a model trained on `stdlib` can be measured on `pydocs`'s held-out
modules.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from .pydocs import SKIP_PARTS, module_name, split_of, stdlib_dir
from .pydocs import documents as pydocs_documents



TEST_PARTS = {"test", "tests"}


@lru_cache(maxsize=1)
def source_files(root: str | None = None) -> tuple[tuple[str, Path], ...]:
    """(split, path) of every source file, then of every test-suite file, each in sorted path order."""
    base = Path(root) if root else stdlib_dir()
    sources, tests = [], []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).parts
        if any(p.startswith("config-") or (p in SKIP_PARTS and p not in TEST_PARTS) for p in rel):
            continue
        if TEST_PARTS.isdisjoint(rel):
            sources.append((split_of(module_name(path, base)), path))
        else:
            tests.append((rel, path))
    held_out = {m for split, path in sources if split == "val" for m in [module_name(path, base)]}
    return tuple(sources) + tuple((test_split(rel, held_out), path) for rel, path in tests)


def tested_names(rel: tuple[str, ...]) -> list[str]:
    """What a test file's path says it tests: test/test_email/test_headerregistry.py -> email,
    email.headerregistry, headerregistry; ctypes/test/test_bitfields.py -> ctypes, ctypes.bitfields, bitfields."""
    names = [p.removesuffix(".py").removeprefix("_").removeprefix("test_") for p in rel]
    names = [n for n in names if n not in TEST_PARTS and n not in ("__init__", "")]
    package = names[0] if len(names) > 1 else ""
    return [n for n in (package, f"{package}.{names[-1]}" if package else "", names[-1]) if n]


def test_split(rel: tuple[str, ...], held_out: set[str]) -> str:
    """A test file is held out with every module it may test: test_os.py and test_urllib2.py go where os and
    urllib went, so a held-out module's tests never teach its text (a name is matched as a prefix: urllib2)."""
    return "val" if any(n.startswith(m) for n in tested_names(rel) for m in held_out) else "train"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # a file that is not UTF-8 text is left out
        return None


def fingerprint() -> str:
    """Changes with the Python version and installation (what the corpus is read from, with or without tests)."""
    return f"stdlib:3:{sys.version.split()[0]}:{stdlib_dir()}:{len(source_files())}"


def documents(split: str | None = None) -> Iterator[tuple[str, str]]:
    """(name, text): each source file (`path:<relative path>`), then every `pydocs` document, of `split`."""
    base = stdlib_dir()
    for file_split, path in source_files():
        if split is not None and file_split != split:
            continue
        text = _read(path)
        if text and text.strip():
            rel = path.relative_to(base).as_posix()
            yield f"path:{rel}", f"# {rel}\n{text}"
    yield from pydocs_documents(split)
