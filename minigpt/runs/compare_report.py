"""The report of `minigpt compare`: results.json -> report.md (table, notes, samples) + curves.png.

`write_report(out)` can be rerun at any time from a comparison folder (a `--task` folder's report is
`learn.tasks.write_task_report`).
`diagnose` writes the notes: which model won (none, when no model got below the uniform loss) and, when the GPT
did not, the detectable causes (budget, size, context, data, overfitting, a sorted validation split) with the
numbers behind each; and what makes the comparison weak (few steps, evaluation eating a time budget, runs past
the budget, models off the target size).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..common import MinigptError, atomic_write_text, human_count

RESULTS = "results.json"
REPORT = "report.md"
FIGURE = "curves.png"
LEARNED = 0.1    # nats per token below ln V: less, and a model has learned nothing measurable
FEW_STEPS = 100  # fewer training steps than this say little about an architecture


def read_results(out: Path) -> dict[str, Any]:
    """A comparison folder's results.json ({} when there is none yet)."""
    path = out / RESULTS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise MinigptError(f"{path}: unreadable ({e}); delete it to retrain every model") from None


def diagnose(results: dict[str, Any]) -> list[str]:
    """Notes for the report: which model won, and when the GPT did not, the likely cause."""
    done = {k: e for k, e in results.get("models", {}).items() if e.get("status") == "done" and e.get("val_bpb")}
    notes: list[str] = []
    machine, loads = results.get("machine", {}), [x for e in done.values() for x in e.get("load", []) if x]
    if loads and machine.get("cpus") and max(loads) > machine["cpus"] and results["config"].get("seconds"):
        notes.append(f"The machine was busy (load average up to {max(loads):.1f} on {machine['cpus']} CPUs): "
                     "time budgets and tokens/s are noisy; `--tokens` gives a repeatable comparison.")
    if (results.get("val_ascending") or 0) > 0.9:
        notes.append(f"The validation lines are in sorted order ({100 * results['val_ascending']:.0f}% of neighbours "
                     "ascending; a text file's val split is its last 10%): not a random sample, and neighbouring "
                     "lines share prefixes that a model with more than a line of context can copy. Shuffle the "
                     "file for a makemore-style random split.")
    if "bigram" in done:
        notes.append(f"The bigram table has V^2 = {done['bigram']['params']:,} parameters whatever --params says: "
                     "it is the floor (one character of context), not a sized competitor.")
    notes += _weak_spots(done, results)
    uniform = math.log(results["vocab_size"]) if results.get("vocab_size") else None
    flat = [k for k, e in done.items() if uniform and e.get("val_loss") and e["val_loss"] > uniform - LEARNED]
    if done and len(flat) == len(done):
        lo, hi = min(e.get("steps", 0) for e in done.values()), max(e.get("steps", 0) for e in done.values())
        notes.insert(0, f"No model learned beyond the uniform loss: every best val loss is within {LEARNED} nats of "
                        f"ln {results['vocab_size']:,} = {uniform:.3f} (every token equally likely), so none is named "
                        f"best. They trained {lo:,}{f' to {hi:,}' if hi > lo else ''} steps: raise the budget.")
        return notes
    if flat:
        notes.append(f"At the uniform loss (ln {results['vocab_size']:,} = {uniform:.3f}, nothing learned): "
                     f"{', '.join(flat)}.")
    if len(done) < 2:
        return notes
    ranked = sorted(done, key=lambda k: done[k]["val_bpb"])
    best, second = ranked[0], ranked[1]
    gap = done[second]["val_bpb"] - done[best]["val_bpb"]
    notes.insert(0, f"Best: **{best}** at {done[best]['val_bpb']:.3f} val bits per byte, "
                    f"{gap:.3f} ahead of {second}.")
    if "gpt" not in done or best == "gpt":
        return notes
    behind = done["gpt"]["val_bpb"] - done[best]["val_bpb"]
    causes = "".join(f"\n  - {c}" for c in _why_gpt_lost(done["gpt"], done[best], best, results))
    notes.insert(1, f"The GPT is {behind:.3f} bpb behind {best}. Likely causes:{causes}")
    return notes


def _weak_spots(done: dict[str, dict[str, Any]], results: dict[str, Any]) -> list[str]:
    """What makes these runs a weak comparison: few steps, evaluation eating a time budget, runs past their time
    budget (the clock is read between steps; the last evaluation and checkpoint come after), sizes off target."""
    cfg, notes = results.get("config", {}), []
    few = {k: e["steps"] for k, e in done.items() if e.get("steps", FEW_STEPS) < FEW_STEPS}
    if few:
        notes.append(f"Few training steps ({_listed(few, '{:,}')}; under {FEW_STEPS}): too few for the losses to say "
                     "much about the architectures; raise the budget.")
    if cfg.get("seconds"):
        per = cfg["seconds"] / len(cfg.get("models") or done)
        slow = {k: e for k, e in done.items() if e.get("train_s") is not None and e["train_s"] < 0.5 * e["wall_s"]}
        if slow:
            notes.append("Evaluation and checkpoints took most of the time of "
                         + ", ".join(f"{k} ({e['train_s']:.0f} s of {e['wall_s']:.0f} s in training steps)"
                                     for k, e in slow.items())
                         + ": a run always starts and ends with an evaluation of 2 x --eval-iters batches; raise "
                           "--budget or lower --eval-iters.")
        over = {k: e["wall_s"] for k, e in done.items() if e.get("wall_s", 0) > 1.1 * per}
        if over:
            notes.append(f"Wall time over the per-model budget of {per:.0f} s ({_listed(over, '{:.0f} s')}): the "
                         "clock is read between training steps, and the evaluation and checkpoint after the last "
                         "step run past it.")
    target = cfg.get("params")
    off = {k: e["params"] for k, e in done.items() if k != "bigram" and target
           and not 2 / 3 <= e["params"] / target <= 1.5}
    if off:
        notes.append(f"Not near the target size of {human_count(target)} parameters "
                     f"({', '.join(f'{k} {n:,} = {n / target:.1f}x' for k, n in off.items())}): the closest each "
                     "kind's width allows; weigh their losses with that in mind.")
    return notes


def _listed(values: dict[str, Any], spec: str) -> str:
    return ", ".join(f"{k} {spec.format(v)}" for k, v in values.items())


def _why_gpt_lost(g: dict[str, Any], w: dict[str, Any], best: str, results: dict[str, Any]) -> list[str]:
    """The detectable reasons the GPT (entry g) trails the winner (entry w): budget, size, data."""
    behind = g["val_bpb"] - w["val_bpb"]
    why: list[str] = []
    if behind < 0.01:
        why.append(f"the gap ({behind:.3f} bpb) is within run-to-run noise")
    axis = "time" if results.get("config", {}).get("seconds") else "tokens"
    half = 0.5 * min(g["curve"][-1][axis], w["curve"][-1][axis]) if g.get("curve") and w.get("curve") else 0
    if half > 0:
        mid = _at(g["curve"], axis, half) - _at(w["curve"], axis, half)
        if mid - behind > 0.02:
            why.append(f"budget: the GPT was closing the gap ({mid:.3f} bpb behind {best} half-way, {behind:.3f} at "
                       "the end); a larger budget favours it")
    if g.get("tokens") and w.get("tokens") and g["tokens"] < 0.7 * w["tokens"]:
        why.append(f"budget: in the same time the GPT trained on {w['tokens'] / g['tokens']:.1f}x fewer tokens than "
                   f"{best} (slower steps on this machine); compare with --tokens to equalise data")
    model = g.get("settings", {}).get("model", {})
    if best in ("rnn", "lstm", "gru") and model.get("block_size", 0) <= 128:
        why.append(f"context: the block is {model.get('block_size')} tokens, and early in the context recurrent "
                   "nets match transformers; attention pulls ahead further into the context and at larger sizes "
                   "(Kaplan et al. 2020, fig. 7); try --block-size 256")
    if g.get("params", 0) < 1e6:
        why.append(f"size: at {human_count(g['params'])} parameters (n_embd {model.get('n_embd')}, "
                   f"{model.get('n_layer')} layers) there is little width for attention to use")
    gap_g, gap_w = _gap(g), _gap(w)
    if gap_g is not None and gap_w is not None and gap_g > 0.1 and gap_g > gap_w + 0.05:
        why.append(f"data: the GPT overfits more than {best} (val - train loss {gap_g:.3f} vs {gap_w:.3f}); "
                   "the training text is small for its size")
    if results.get("lines"):
        why.append("data: the lines are short, so the context that matters fits in every model's window and "
                   "attention's long-range advantage has little to work with")
    return why or ["no single cause detected; try a larger --budget or --params"]


def _at(curve: list[dict[str, Any]], axis: str, x: float) -> float:
    """val bpb of a learning curve at `x` on `axis` (time or tokens), linearly interpolated."""
    pts = [(c[axis], c["val_bpb"]) for c in curve if c.get("val_bpb") is not None]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1] if x > pts[-1][0] else pts[0][1]


def _gap(entry: dict[str, Any]) -> float | None:
    final = entry.get("final_val_loss", entry.get("val_loss"))
    if entry.get("train_loss") is None or final is None:
        return None
    return final - entry["train_loss"]


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s" if v < 10 else f"{v:.0f} s"


def _left_out(dropped: dict[str, int] | None) -> str:
    if not dropped:
        return "-"
    why = {"length": "cut by the length limit", "special": "ended on a special token", "blank": "blank"}
    return ", ".join(f"{n} {why[k]}" for k, n in dropped.items() if n) or "0"


def _ending(end: dict[str, Any]) -> str:
    """Why a sample's text ends where it does."""
    if end.get("reason") != "stop" or not end.get("token"):
        return f"{end['tokens']} tokens: the length limit"
    what = {"<|bos|>": "a document boundary", "<|unk|>": "the unknown-character token"}.get(
        end["token"], "a special token plain text never holds")
    return f"ended after {end['tokens'] - 1} tokens: the model drew {end['token']} ({what})"


def write_report(out: str | Path) -> Path:
    """Write report.md and curves.png in `out` from its results.json (and return the report's path)."""
    from ..train.metrics import markdown_table, plot_comparison

    out = Path(out)
    results = read_results(out)
    if results.get("task"):  # accuracy against the gap: learn.tasks.write_task_report (runs never import learn)
        raise MinigptError(f"{out}: a `compare --task` folder; its report is written by "
                           "minigpt.learn.tasks.write_task_report")
    if not results.get("models"):
        raise MinigptError(f"{out}: no {RESULTS}; run `minigpt compare --out {out}` first")
    cfg, done = results["config"], {k: e for k, e in results["models"].items() if e.get("status") == "done"}
    plot_comparison({k: e.get("curve", []) for k, e in done.items()}, out / FIGURE,
                    title=f"{Path(results['data']).name}, {results['tokenizer']} tokens")
    budget = (f"{cfg['seconds']:.0f} s in all ({cfg['seconds'] / len(cfg['models']):.0f} s per model)"
              if cfg.get("seconds") else f"{int(cfg['tokens']):,} tokens per model")
    rows = []
    for kind, e in results["models"].items():
        if e.get("status") != "done":
            rows.append([kind, e.get("status", "?")] + ["-"] * 11)
            continue
        rows.append([kind, f"{e['params']:,}", human_count(e["flops_per_token"]), _fmt(e["tokens_per_s"], ",.0f"),
                     f"{e['steps']:,}", human_count(e["tokens"]), f"{e['lr']:g}", _fmt(e["train_loss"], ".3f"),
                     _fmt(e.get("final_val_loss", e["val_loss"]), ".3f"),
                     f"{_fmt(e['val_loss'], '.3f')} @{e.get('best_step', e['steps'])}", _fmt(e["val_bpb"], ".3f"),
                     _seconds(e.get("train_s")), _seconds(e["wall_s"])])
    header = ["model", "params", "FLOPs/token", "tokens/s", "steps", "tokens", "lr", "train loss", "val loss",
              "best val loss @step", "best val bpb", "training time", "wall time"]
    machine = results.get("machine", {})
    bigram = done.get("bigram", {}).get("params")
    target = f"Target size {human_count(cfg['params'])} parameters" + (
        f" (the bigram excepted: its V^2 table has {bigram:,})" if bigram else "")
    parts = [f"# minigpt compare: {results['data']}", "",
             f"Data `{results['data']}` ({results['train_tokens']:,} train / {results['val_tokens']:,} val tokens, "
             f"{results['bytes_per_token']:.2f} bytes per token), tokenizer `{results['tokenizer']}` "
             f"(vocab {results['vocab_size']}). {target}; budget "
             f"{budget}; block {cfg['block_size']}, batch {cfg['batch_size']}; seed {cfg['seed']}. Machine: "
             f"{machine.get('cpus')} CPUs ({machine.get('torch_threads')} torch threads)"
             f"{', ' + machine['cuda'] if machine.get('cuda') else ''}, torch {machine.get('torch')}.", "",
             markdown_table(header, rows, align="l" + "r" * 12), "",
             "Losses are nats per token on the same fixed windows for every model: train and val loss at the final "
             "evaluation; best val loss = the lowest over the evaluations (the checkpoint kept as `best`, as makemore "
             "keeps its best; models are ranked by it and sampled from it); bpb = bits per byte, comparable across "
             "tokenizers. tokens/s is the median training throughput. Training time is the time in training steps; "
             "wall time adds the evaluations and checkpoints.", ""]
    notes = diagnose(results)
    if notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    parts += ["## Learning curves", "", f"![validation bits per byte]({FIGURE})", ""]
    mem = {k: e["memorisation"] for k, e in done.items() if e.get("memorisation")}
    if mem:
        parts += ["## Memorisation (makemore's check)", "",
                  f"Share of sampled lines (temperature 1) found in the training set, else in the validation set, "
                  f"else new. Of the {cfg['samples']} lines drawn per model, those the length limit cut (no newline "
                  f"within {cfg['block_size'] - 1} tokens), those that ended on a special token (a document "
                  "boundary, a chat marker, the unknown character) and blank ones are left out.", "",
                  markdown_table(["model", "lines", "in train", "in val", "new", "left out"],
                                 [[k, str(m["n"]), f"{100 * m['train']:.0f}%", f"{100 * m['val']:.0f}%",
                                   f"{100 * m['new']:.0f}%", _left_out(done[k].get("dropped"))]
                                  for k, m in mem.items()], align="lrrrrl"), ""]
    own = any("sample_seed" in e for e in done.values())  # results.json from before per-model seeds: one seed
    parts += ["## Samples", "",
              "Temperature 1, no top-k or top-p, from each model's best checkpoint. " + (
                  "Each model samples with its own seed (shown; --seed + 1,000,000 x its place in bigram, mlp, cnn, "
                  "rnn, lstm, gru, gpt), so fragments two models share are not shared randomness. A special token "
                  "(<|bos|>, the chat markers, the unknown character) ends a sample instead of being printed."
                  if own else f"Every model samples with the same seed ({cfg['seed']}): near-uniform models draw "
                  "alike, so shared fragments are shared randomness, not copying."), ""]
    for kind, e in done.items():
        text, seed = e.get("sample_text"), e.get("sample_seed")
        parts += [f"**{kind}**" + (f" (seed {seed})" if seed is not None else ""), "", "```",
                  (text or "(no sample)").rstrip(), "```", ""]
        if e.get("sample_end"):
            parts += [f"_{_ending(e['sample_end'])}_", ""]
    path = out / REPORT
    atomic_write_text(path, "\n".join(parts))
    return path
