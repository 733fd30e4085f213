"""The built-in offline corpus `pydocs`: the documentation of the Python installation minigpt runs on.

Why this corpus: every machine that runs minigpt has it, it needs no download, it is real English prose about
a domain users know, and it carries structure (names, signatures, one-line summaries) that the built-in SFT,
preference and RL data are generated from. It is read with `ast` (no module of the source is imported, so
nothing runs) plus the `pydoc_data.topics` table (read with `ast.literal_eval`). On CPython 3.11 it is about
2 MB in ~700 documents.

What has no source to read: the functions written in C (`len`, `str.split`, `math.sqrt`, `time.time`,
`itertools.chain`, `os.listdir`), the first ones people ask about. Their docstrings are read from the running
interpreter (`compiled_entries`), importing only the modules of `COMPILED`, which are part of Python itself
and already loaded or free of side effects.

Determinism: files are visited in sorted order and every document's split is a hash of its name, so the same
Python version always gives the same bytes. The split is by module: about 1 in 12 modules (and topics) go to
`val`, so validation text is genuinely unseen, not a tail of the same files.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import os
import re
import sys
import sysconfig
import types
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

# Sub-packages that are tests, demos, tool internals or vendored code: skipped.
SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "lib2to3", "__pycache__",
               "ensurepip", "turtledemo", "pydoc_data", "encodings", "idlelib"}
VAL_ONE_IN = 12
# Modules whose C functions and classes `compiled_entries` reads, builtins first (an object reachable from two is
# named by the first: `io.open` is `open`).
COMPILED = ("builtins", "math", "cmath", "time", "itertools", "functools", "operator", "collections", "heapq",
            "bisect", "os", "sys", "struct", "array", "binascii", "zlib", "unicodedata", "gc", "io", "select",
            "signal", "atexit", "marshal")


@dataclass(frozen=True)
class Entry:
    """One documented object: a module, class or function, with its signature and cleaned docstring."""

    module: str
    qualname: str  # "" for the module itself, "JSONEncoder.encode" for a method
    kind: str  # "module" | "class" | "function"
    signature: str  # "(obj, *, skipkeys=False, ...)" for functions and classes with __init__, else ""
    doc: str
    alias: str = ""  # the name it is called by where that differs: "os.path.join", "random.randint" (`_aliases`)

    @property
    def name(self) -> str:
        """"json.dumps"; a builtin by the name it is called by: "len", "str.split"."""
        if self.module == "builtins" and self.qualname:
            return self.qualname
        return f"{self.module}.{self.qualname}" if self.qualname else self.module

    @property
    def summary(self) -> str:
        """The first sentence of the docstring (up to the first '. ' or blank line), on one line."""
        return first_sentence(self.doc)


def first_sentence(doc: str) -> str:
    para = " ".join(doc.strip().split("\n\n")[0].split())
    for end in (". ", "! ", "? "):
        if end in para:
            para = para[: para.index(end) + 1]
    return para


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def module_name(path: Path, root: Path) -> str:
    """json/__init__.py -> json, email/mime/text.py -> email.mime.text."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, drop_self: bool) -> str:
    args = node.args
    if drop_self and args.args and args.args[0].arg in ("self", "cls"):
        args = ast.arguments(posonlyargs=args.posonlyargs, args=args.args[1:], vararg=args.vararg,
                             kwonlyargs=args.kwonlyargs, kw_defaults=args.kw_defaults, kwarg=args.kwarg,
                             defaults=args.defaults[-len(args.args[1:]):] if args.args[1:] else [])
    try:
        return f"({ast.unparse(args)})"
    except Exception:  # pragma: no cover - exotic default values
        return "(...)"


def _aliases(tree: ast.Module, module: str) -> dict[str, str]:
    """Qualified names called by another name: a module-level instance's bound methods (random.py's
    `randint = _inst.randint`: random.Random.randint is called as random.randint) and the functions of the module
    that `os.path` is on this platform and of genericpath, which it star-imports (posixpath.join and
    genericpath.exists are called as os.path.join and os.path.exists)."""
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assigns = [(n.targets[0].id, n.value) for n in tree.body
               if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)]
    instances = {name: v.func.id for name, v in assigns
                 if isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id in classes}
    out = {f"{instances[v.value.id]}.{v.attr}": f"{module}.{name}" for name, v in assigns
           if _is_public(name) and isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name)
           and v.value.id in instances}
    if module in (os.path.__name__, "genericpath"):
        out.update({n.name: f"os.path.{n.name}" for n in tree.body
                    if isinstance(n, ast.FunctionDef) and _is_public(n.name)})
    return out


def _entries_of(tree: ast.Module, module: str) -> Iterator[Entry]:
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield Entry(module, "", "module", "", doc)
    aliases = _aliases(tree, module)

    def walk(body: list[ast.stmt], prefix: str, in_class: bool) -> Iterator[Entry]:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public(node.name):
                doc = ast.get_docstring(node, clean=True)
                if doc and node.name != "__init__":
                    name = prefix + node.name
                    yield Entry(module, name, "function", _signature(node, in_class), doc, aliases.get(name, ""))
            elif isinstance(node, ast.ClassDef) and _is_public(node.name):
                doc = ast.get_docstring(node, clean=True)
                init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
                if doc:
                    sig = _signature(init, True) if init else ""
                    yield Entry(module, prefix + node.name, "class", sig, doc)
                yield from walk(node.body, f"{prefix}{node.name}.", True)

    yield from walk(tree.body, "", False)


# A C docstring's signature line: "reduce(function, iterable[, initial]) -> value", "S.format(*args) -> str"
SIGNATURE_LINE = re.compile(r"^(?:\w+\.)?(\w+)\((.*)\)\s*(?:--?>\s*(.*))?$")
HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on every class made by a class statement
SELF = re.compile(r"^\((?:self|cls|type|module)(?:, /)?(?:, |(?=\)))")  # "(self, /, sep=None)" -> "(sep=None)"


def _parses(sig: str) -> bool:
    try:
        ast.parse(f"def f{sig}: pass")
    except SyntaxError:
        return False
    return True


def _doc_signature(name: str, doc: str) -> tuple[str, str]:
    """C docstrings that start with their signature ("time() -> floating point number", then a blank line):
    the signature with the most arguments whose line parses, and the docstring without that paragraph. Brackets
    around optional arguments are dropped ("iterable[, initial]" -> "iterable, initial"). A sentence after the
    arrow is the summary ("zip(*iterables) --> Yield tuples until an input is exhausted.")."""
    first, _, rest = doc.partition("\n\n")
    lines = [m for m in map(SIGNATURE_LINE.match, first.splitlines()) if m]  # continuation lines do not match
    if not SIGNATURE_LINE.match(first.split("\n", 1)[0]) or any(m.group(1) != name for m in lines):
        return "", doc
    signatures = [f"({', '.join(a for a in re.sub(r'[][]', '', m.group(2)).split(', ') if a.strip(' ,') != '...')})"
                  for m in lines]
    after = lines[0].group(3) or ""
    if after[:1].isupper() and after.endswith("."):
        rest = f"{after}\n\n{rest}"
    return max(filter(_parses, signatures), key=lambda s: s.count(",") + (s != "()"), default=""), rest.strip()


def _compiled_entry(module: str, qualname: str, obj: object, kind: str) -> Entry | None:
    """A C function, method or class as an Entry, its signature from `inspect.signature` or from the first line of
    its docstring, a method's self dropped; None without a docstring or a signature (its arguments unknown)."""
    doc = inspect.cleandoc(obj.__doc__) if isinstance(obj.__doc__, str) else ""
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig, doc = _doc_signature(qualname.rsplit(".", 1)[-1], doc)
    sig = SELF.sub("(", sig) if "." in qualname else sig
    return Entry(module, qualname, kind, sig, doc) if doc and sig and _parses(sig) else None


def _is_compiled(obj: object, module: str) -> bool:
    """A function or class written in C (no Python source behind it) and defined by `module` or the C module behind
    it (`_io` for io, `posix` for os), not one it imported (functools.RLock is _thread's)."""
    owners = {module, f"_{module}"} | ({os.name} if module == "os" else set())
    if getattr(obj, "__module__", None) not in owners:
        return False
    if isinstance(obj, types.BuiltinFunctionType):
        return obj.__self__ is None or inspect.ismodule(obj.__self__)  # not a bound method of an instance
    if isinstance(obj, type):  # a static type (collections.deque), or a heap type of a module with no .py
        source = getattr(sys.modules.get(obj.__module__), "__file__", None)
        return not obj.__flags__ & HEAPTYPE or not (source or "").endswith(".py")
    return False


@lru_cache(maxsize=1)
def compiled_entries() -> tuple[Entry, ...]:
    """The documented public functions and classes of `COMPILED` that are written in C, and the public methods of
    those classes (`str.split`, `dict.get`), each under the first module that offers it; what the source files
    document already (`datetime.datetime`) is left to them."""
    documented = {e.name for e in entries()}
    seen: set[int] = set()
    out: list[Entry] = []
    for module in COMPILED:
        mod = importlib.import_module(module)
        for name in sorted(filter(_is_public, dir(mod))):
            obj = getattr(mod, name)
            if id(obj) in seen or not _is_compiled(obj, module):
                continue
            seen.add(id(obj))
            kind = "class" if isinstance(obj, type) else "function"
            entry = _compiled_entry(module, name, obj, kind)
            if entry and entry.name not in documented:
                out.append(entry)
            if kind == "class" and not issubclass(obj, BaseException):
                for attr, member in sorted(vars(obj).items()):
                    if _is_public(attr) and attr != "__init__" and callable(member) and not isinstance(member, type):
                        method = _compiled_entry(module, f"{name}.{attr}", member, "function")
                        if method and method.name not in documented:
                            out.append(method)
    return tuple(out)


@lru_cache(maxsize=2)
def entries(root: str | None = None) -> tuple[Entry, ...]:
    """Every documented public module, class and function of the standard library's source, in a fixed order."""
    base = Path(root) if root else stdlib_dir()
    out: list[Entry] = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).parts
        if any(p in SKIP_PARTS or p.startswith("config-") for p in rel) or any(p.startswith("_") and p != "__init__.py" for p in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        out.extend(_entries_of(tree, module_name(path, base)))
    return tuple(out)


def all_entries() -> tuple[Entry, ...]:
    """What the source files document, then what only the interpreter does (`compiled_entries`)."""
    return entries() + compiled_entries()


def topics(root: str | None = None) -> dict[str, str]:
    """The pydoc help topics (language reference sections), read from pydoc_data/topics.py as a literal."""
    path = (Path(root) if root else stdlib_dir()) / "pydoc_data" / "topics.py"
    if not path.is_file():
        return {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "topics" for t in node.targets):
            return dict(sorted(ast.literal_eval(node.value).items()))
    return {}


def fingerprint() -> str:
    """Changes with the Python version and installation (what the corpus is read from)."""
    return f"pydocs:2:{sys.version.split()[0]}:{stdlib_dir()}"


def split_of(name: str) -> str:
    """'train' or 'val', fixed by a hash of the module (or topic) name."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return "val" if digest[0] % VAL_ONE_IN == 0 else "train"


def render_entry(e: Entry) -> str:
    if e.kind == "module":
        return f"Module {e.module}\n\n{e.doc}\n"
    label = "class " if e.kind == "class" else ""
    return f"{label}{e.name}{e.signature}\n{inspect.cleandoc(e.doc)}\n"


def documents(split: str | None = None) -> Iterator[tuple[str, str]]:
    """(name, text) documents: one per module (its docstring then its classes and functions), one per topic."""
    by_module: dict[str, list[Entry]] = {}
    for e in all_entries():
        by_module.setdefault(e.module, []).append(e)
    for module, items in by_module.items():
        if split is None or split_of(module) == split:
            yield module, "\n".join(render_entry(e) for e in items)
    for name, text in topics().items():
        if split is None or split_of(f"topic:{name}") == split:
            yield f"topic:{name}", text.strip() + "\n"
