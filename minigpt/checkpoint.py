"""Run directories and checkpoints: one format for every stage and model family (DESIGN section 4).

    checkpoints/<run>/
      run.json                 stage, parent run, resolved configs, minigpt version, format version, and the
                               working folder it started in ("cwd": what its relative paths are relative to)
      metrics.jsonl            append-only training and eval metrics (the trainer writes it)
      step_000500/             written as a temp folder, fsynced, then renamed into place (step_000500.2 when
                               step 500 is saved again: a folder `latest` names is never renamed or replaced)
        config.json            {"format": 1, "model": {...}, "tokenizer_sha256": ..., "step": ..., "about": ...}
        model.safetensors      weights of the unwrapped module (tied tensors stored once)
        tokenizer.bpe|.char    a copy, so a checkpoint is self-contained
        trainer_state.safetensors + trainer_state.json   optimizer, RNG and data position, step
      latest                   names the newest complete step (written last, atomically)
      best                     names the step with the lowest val loss
      .lock                    held by the one process writing the run (runlock.py)

A step's config.json is minigpt's, not a Hugging Face model config, though it shares the name: its "about"
field says so, and `minigpt export RUN --format hf --out DIR` (minigpt/export/) writes a folder that
`transformers` loads.

Nothing is pickled: tensors go to safetensors, everything else to JSON. Loading checks, in order, that the
files exist, the format version, the model kind and config, the tokenizer hash, and strict weight loading;
each failure is one `MinigptError` line naming the file and the fix; the weights' shapes are checked against
the safetensors header before the model is built, so a crafted config cannot make it allocate anything.

Crash safety: at every instant `latest` names a complete, fsynced step folder; a kill leaves at most a hidden
`.step_*.tmp` folder or a `.*.tmp` file, which `recover_run` (run by `check_run_dir` and the trainer, under the
run's lock) deletes, pointing a dangling `latest` back at the newest complete step. A failed write (disk full)
is one line and leaves the previous checkpoint as it was.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from . import __version__
from .common import MinigptError, atomic_write_text, fsync_dir, fsync_file, sha256_file, temp_dir_beside
from .config import to_dict

FORMAT = 1
ABOUT = ("a minigpt checkpoint, not a Hugging Face model folder: `minigpt export RUN --format hf --out DIR` writes "
         "one that transformers' from_pretrained(DIR) loads")
TOKENIZER_FILES = ("tokenizer.bpe", "tokenizer.char")


# ---------------------------------------------------------------------------------------------- flatten state


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, numbers) into {path: tensor} and a JSON skeleton in
    which each tensor is replaced by {"__tensor__": path}. Used for optimizer and trainer state."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[k, walk(v, f"{path}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return {"__list__" if isinstance(obj, list) else "__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        return obj

    return tensors, walk(state, prefix or "state")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["__list__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    return skeleton


# ---------------------------------------------------------------------------------------------- runs


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """run.json: what this run is (stage, parent, configs). Rewritten atomically on each start/resume."""
    atomic_write_text(run_dir / "run.json", json.dumps({"format": FORMAT, "minigpt": __version__, **info}, indent=2))


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MinigptError(f"{path}: unreadable ({e}); restore it from a backup, or start a new run with another "
                           "--out") from None
    if not isinstance(info, dict):
        raise MinigptError(f"{path}: not a run description (a JSON object); restore it or start a new run")
    return info


def run_path(info: dict[str, Any], value: str | None) -> str | None:
    """A path run.json records, as the run meant it: a relative one is relative to the folder the run started
    in (run.json's "cwd"), wherever --resume runs from. What is no path there (a built-in corpus, a Hub id), and
    paths of runs saved before "cwd" was recorded, come back as they are."""
    if not value or not info.get("cwd") or Path(value).is_absolute():
        return value
    there = Path(info["cwd"]) / value
    return str(there) if there.exists() else value


def damaged_step(step: Path, resume: bool) -> str:
    """What to do about a damaged step folder. --resume has no flag to pick a step: it continues from `latest`,
    which falls back to the newest complete step once the damaged folder is gone."""
    if resume:
        return (f"move {step} out of the run folder (or delete it), then --resume again: 'latest' falls back to "
                "the newest step left")
    return "use another step (give its step_* folder)"


def tokenizer_file(folder: Path) -> Path | None:
    return next((folder / n for n in TOKENIZER_FILES if (folder / n).is_file()), None)


def _put(path: Path, write) -> None:
    """The one way a checkpoint file is written: `write(path)`, then fsync (fault-injection tests patch this)."""
    write(path)
    fsync_file(path)


def _write_step(folder: Path, config: dict, model, tokenizer_path: Path, trainer_state: dict | None) -> None:
    _put(folder / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))
    _put(folder / "model.safetensors", lambda p: save_model(model, str(p)))
    _put(folder / Path(tokenizer_path).name, lambda p: shutil.copyfile(tokenizer_path, p))
    if trainer_state is not None:
        tensors, skeleton = flatten_state(trainer_state)
        _put(folder / "trainer_state.safetensors", lambda p: save_file(tensors, str(p)))
        _put(folder / "trainer_state.json", lambda p: p.write_text(json.dumps(skeleton)))
    fsync_dir(folder)


def _free_name(run_dir: Path, step: int) -> Path:
    """step_N, or step_N.2, step_N.3... when step N is saved again (the folder `latest` names stays untouched)."""
    name, k = step_name(step), 1
    while (run_dir / (name if k == 1 else f"{name}.{k}")).exists():
        k += 1
    return run_dir / (name if k == 1 else f"{name}.{k}")


def save_checkpoint(run_dir: Path, step: int, model, tokenizer_path: Path, *, trainer_state: dict | None = None,
                    extra: dict | None = None, keep: int = 2, best: bool = False) -> Path:
    """Write a step folder, then point `latest` (and `best` if asked) at it, then prune old steps. A kill at any
    moment leaves `latest` naming a complete step; a write error (disk full) raises one line and changes nothing."""
    run_dir = Path(run_dir)
    config = {"format": FORMAT, "minigpt": __version__, "step": step, "model": to_dict(model.config),
              "tokenizer_sha256": sha256_file(tokenizer_path), **(extra or {}), "about": ABOUT}
    tmp = None
    try:
        tmp = temp_dir_beside(run_dir / step_name(step))
        _write_step(tmp, config, model, tokenizer_path, trainer_state)
        target = _free_name(run_dir, step)
        os.rename(tmp, target)
        fsync_dir(run_dir)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):
            raise MinigptError(f"{run_dir}: cannot save step {step} ({e}); the previous checkpoint is kept; free "
                               "some disk space, then continue with --resume") from None
        raise
    try:
        same_step_best = (_step_of(_read_pointer(run_dir, "best") or "") == step)
        atomic_write_text(run_dir / "latest", target.name + "\n")
        if best or same_step_best:
            atomic_write_text(run_dir / "best", target.name + "\n")
    except OSError as e:
        raise MinigptError(f"{run_dir}: saved {target.name} but cannot point 'latest' at it ({e}); free some disk "
                           "space, then continue with --resume") from None
    _prune(run_dir, keep, step)
    return target


_STEP = re.compile(r"step_(\d+)(?:\.(\d+))?")


def _step_of(name: str) -> int | None:
    m = _STEP.fullmatch(name)
    return int(m.group(1)) if m else None


def _step_folders(run_dir: Path) -> list[Path]:
    """step_* folders, oldest first (step, then re-save number)."""
    found = []
    for folder in run_dir.glob("step_*"):
        m = _STEP.fullmatch(folder.name)
        if m and folder.is_dir():
            found.append(((int(m.group(1)), int(m.group(2) or 1)), folder))
    return [folder for _, folder in sorted(found)]


def _prune(run_dir: Path, keep: int, step: int) -> None:
    """Delete older saves of `step` and all but the `keep` newest steps; `latest` and `best` always stay."""
    protected = {_read_pointer(run_dir, "latest"), _read_pointer(run_dir, "best")}
    folders = _step_folders(run_dir)
    superseded = [p for p in folders if _step_of(p.name) == step and p.name not in protected]
    rest = [p for p in folders if p not in superseded]
    for folder in superseded + [p for p in (rest[:-keep] if keep > 0 else []) if p.name not in protected]:
        shutil.rmtree(folder, ignore_errors=True)


def is_complete(folder: Path) -> bool:
    """A step folder with its config, weights and tokenizer (every folder renamed into place by save_checkpoint)."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() \
        and tokenizer_file(folder) is not None


def newest_complete(run_dir: Path) -> Path | None:
    return next((p for p in reversed(_step_folders(run_dir)) if is_complete(p)), None)


def recover_run(run_dir: Path) -> list[str]:
    """Tidy a run folder after a crash (call it holding the run's lock): delete temp leftovers, bring back a
    `.step_N.old` folder an older minigpt left mid-swap, and point a dangling `latest` at the newest complete
    step. Returns what was done, one line each."""
    run_dir, done = Path(run_dir), []
    if not run_dir.is_dir():
        return done
    latest = _read_pointer(run_dir, "latest")
    for leftover in sorted(run_dir.glob(".*.old")) + sorted(run_dir.glob(".*.tmp")):
        back = run_dir / leftover.name[1:-len(".old")]
        if leftover.suffix == ".old" and latest == back.name and not is_complete(back) and is_complete(leftover):
            shutil.rmtree(back, ignore_errors=True)
            os.rename(leftover, back)
            done.append(f"restored {back.name} from {leftover.name}")
        elif leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    if (latest is None and _step_folders(run_dir)) or (latest is not None and not is_complete(run_dir / latest)):
        newest = newest_complete(run_dir)
        if newest is not None:
            atomic_write_text(run_dir / "latest", newest.name + "\n")
            done.append(f"'latest' named {latest or 'nothing'}; now {newest.name}, the newest complete step")
    best = _read_pointer(run_dir, "best")
    if best is not None and not is_complete(run_dir / best):
        (run_dir / "best").unlink()
        done.append(f"'best' named the missing {best}; removed")
    fsync_dir(run_dir)
    return done


def check_run_dir(run_dir: str | Path, resume: bool) -> Path:
    """The one rule every training command follows, checked before any tokenizer or data work: a new run needs
    a folder that holds no run, and `--resume` needs the folder of an earlier run. A folder another process is
    writing is refused here already (runlock.py); on `--resume` crash leftovers are tidied first."""
    from .common import print0
    from .runlock import is_rank_zero, run_lock

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise MinigptError(f"--out {run_dir}: is a file, not a folder; give a folder for the run")
    if not resume:  # made now (a file on the way, no permission...): said here, not after the data work
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MinigptError(f"--out {run_dir}: cannot be created ({e.strerror}); give another folder") from None
    if resume and not (run_dir / "run.json").is_file():
        raise MinigptError(f"--resume: {run_dir} holds no run (no run.json); give the --out of an earlier run")
    if run_dir.is_dir():
        with run_lock(run_dir):
            for line in recover_run(run_dir) if resume and is_rank_zero() else []:  # rank 0 repairs, says it once
                print0(f"recovered {run_dir}: {line}", markup=False)
    if resume and not (run_dir / "latest").is_file():
        raise MinigptError(f"--resume: {run_dir} stopped before its first checkpoint; start it again without "
                           "--resume")
    if not resume and (run_dir / "latest").exists():
        raise MinigptError(f"{run_dir}: already holds a run; add --resume to continue it, or choose another --out")
    return run_dir


def _read_pointer(run_dir: Path, name: str) -> str | None:
    path = run_dir / name
    return path.read_text().strip() if path.is_file() else None


def resolve_step(path: str | Path) -> Path:
    """A run folder (-> its latest step), a run folder's `best`/`latest`, or a step folder -> the step folder."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    run_dir, pointer = (path.parent, path.name) if path.name in ("latest", "best") and path.is_file() \
        else (path, "latest")
    if run_dir.is_dir():
        name = _read_pointer(run_dir, pointer)
        if name and (run_dir / name / "config.json").is_file():
            return run_dir / name
        newest = newest_complete(run_dir)
        if name and newest is not None:
            raise MinigptError(f"{run_dir}/{pointer} names {name}, which is missing (an interrupted save?); give "
                               f"--checkpoint {newest}, or continue the run with --resume, which repairs it")
        raise MinigptError(f"{path}: no complete checkpoint in this folder (no 'latest'); train one first "
                           "or give a step_* folder")
    raise MinigptError(f"--checkpoint {path}: no such checkpoint folder")


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    model: Any
    tokenizer: Any
    tokenizer_path: Path
    trainer_state: dict | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def step(self) -> int:
        return int(self.config.get("step", 0))

    def writer(self) -> "Checkpoint":
        """This checkpoint if its model writes text; a reward model (it scores replies) is a one-line error."""
        if getattr(self.model.config, "kind", None) == "reward":
            raise MinigptError(f"{self.run_dir}: a reward model scores replies and cannot write any; give a "
                               "language model's run (pretrain, sft, dpo or rl)")
        return self


def read_config(path: Path, resume: bool = False) -> dict[str, Any]:
    cfg_path = path / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise MinigptError(f"{cfg_path}: unreadable ({e}); the checkpoint is corrupt: "
                           f"{damaged_step(path, resume)}") from None
    if config.get("format") != FORMAT:
        raise MinigptError(f"{cfg_path}: checkpoint format {config.get('format')!r}, this minigpt reads {FORMAT}; "
                           "use a matching minigpt version")
    if not isinstance(config.get("model"), dict):
        raise MinigptError(f"{cfg_path}: no model config; the checkpoint is corrupt: {damaged_step(path, resume)}")
    return config


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", with_trainer_state: bool = False,
                    build=None) -> Checkpoint:
    """Load and validate a checkpoint. `build(config_dict) -> nn.Module` builds the module (default: the model
    registry; the reward stage passes its own). `with_trainer_state` is --resume's load: a damaged step's
    message then says how to resume without it."""
    from .models import build_model, config_from_dict, shapes_only
    from .text.tokenizer import load_tokenizer

    path = resolve_step(path)
    other = damaged_step(path, resume=with_trainer_state)
    config = read_config(path, resume=with_trainer_state)
    tok_path = tokenizer_file(path)
    if tok_path is None:
        raise MinigptError(f"{path}: no tokenizer file in the checkpoint; it is incomplete: {other}")
    if sha256_file(tok_path) != config.get("tokenizer_sha256"):
        raise MinigptError(f"{tok_path}: does not match the tokenizer the model was trained with "
                           "(sha256 differs); restore the original file")
    tokenizer = load_tokenizer(tok_path)
    build = build or (lambda c: build_model(config_from_dict(c, source=str(path / "config.json"))))
    weights = path / "model.safetensors"
    with shapes_only():  # nothing is allocated before the shapes match the file's header
        probe = build(config["model"])
    _check_shapes(weights, probe, other)
    vocab = getattr(probe.config, "vocab_size", None)
    if vocab is not None and vocab < tokenizer.vocab_size:
        raise MinigptError(f"{path}: model vocab {vocab} is smaller than the tokenizer's {tokenizer.vocab_size}; "
                           "the checkpoint is inconsistent")
    model = build(config["model"])
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError) as e:
        raise MinigptError(f"{weights}: unreadable ({e}); the file is truncated or corrupt: {other}") from None
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[-1] if first else "")
        raise MinigptError(f"{weights}: weights do not fit the config ({detail[:200]}); "
                           "the checkpoint is inconsistent") from None
    if missing or unexpected:
        raise MinigptError(f"{weights}: weights do not fit the config (missing {list(missing)[:3]}, "
                           f"unexpected {list(unexpected)[:3]}); the checkpoint is inconsistent")
    broken = next((name for name, t in model.state_dict().items() if t.is_floating_point() and
                   not torch.isfinite(t).all()), None)
    if broken is not None:  # a run that diverged before minigpt stopped such runs, or another tool's
        raise MinigptError(f"{weights}: {broken} holds NaN or infinite values (the run that saved it diverged); "
                           f"{other}")
    model.to(device)
    state = None
    if with_trainer_state and (path / "trainer_state.json").is_file():
        try:
            tensors = load_file(str(path / "trainer_state.safetensors"))
            state = unflatten_state(json.loads((path / "trainer_state.json").read_text()), tensors)
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            raise MinigptError(f"{path}/trainer_state.*: unreadable ({e}); {other}") from None
    return Checkpoint(path, config, model, tokenizer, tok_path, state)


def _check_shapes(weights: Path, probe, other: str) -> None:
    """Every tensor in the safetensors header must have the shape the config gives it (read from the header
    alone, against a model built on the meta device). `other`: what to do instead (damaged_step)."""
    try:
        with safe_open(str(weights), "pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as e:
        raise MinigptError(f"{weights}: unreadable ({e}); the file is truncated or corrupt: {other}") from None
    expected = {name: tuple(t.shape) for name, t in probe.state_dict().items()}
    for name, shape in shapes.items():
        if name not in expected or expected[name] != shape:
            wanted = f"config.json gives {expected[name]}" if name in expected else "config.json has no such tensor"
            raise MinigptError(f"{weights}: weights do not fit the config ({name} is {shape} in the file, "
                               f"{wanted}); the checkpoint is inconsistent")
