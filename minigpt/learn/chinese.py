"""Lesson 7, chinese: next-character training on Tang poems, then what each new character attended to.

The corpus is data/tang_poems_5char.txt: 1,361 five-character poems by Li Bai, Du Fu, Wang Wei and Meng Haoran
(82,522 characters, 3,293 distinct), selected from the Complete Tang Poems (public domain, via
chinese-poetry/chinese-poetry) and converted to Simplified characters (data/README.md; scripts/learn_data.py).
One line shows what "predict the next character" means: every prefix of it is a training example (春 -> 眠,
春眠 -> 不, 春眠不 -> 觉, ...), and one window of T characters is T examples at once (x = ids[:-1], y = ids[1:],
the causal mask keeping each from seeing its answer). A 4x4x128 character GPT (block 64, dropout 0.1) is trained
on it by `pretrain` for 2 minutes into DIR/chinese-gpt (--quick: 8 s, 4x4x64, into DIR/chinese-gpt-quick, so it
never replaces the full model; Ctrl-C drops the new model and keeps the earlier one), and its best checkpoint
continues 春眠不觉晓， through `inspect generate`'s view: each new character in red, the earlier ones blue where
its prediction attended strongly and grey where weakly; also as the self-contained HTML page and the attention
PNG of lens/. With another corpus (--data), the example line and the prompts come from it.
"""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Iterator

from ..common import MinigptError, atomic_dir, console, err_console
from .story import Story

CORPUS = Path(__file__).resolve().parents[2] / "data" / "tang_poems_5char.txt"
LINE = "春眠不觉晓，处处闻啼鸟。"
PROMPT = "春眠不觉晓，"
NEXT_PROMPTS = ("床前明月光，", "白日依山尽，")  # the closing line's examples
SECONDS = 120.0
QUICK_SECONDS = 8.0
BLOCK = 64
MIN_CHARS = 2000  # a tenth is held out to validate, and both parts must fill a window of BLOCK + 1 characters
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def training_pairs(text: str) -> list[tuple[str, str]]:
    """Every prefix of the text with the character that follows it: what the model learns from this line."""
    return [(text[:i], text[i]) for i in range(1, len(text))]


def corpus(story: Story) -> tuple[Path, str]:
    """The corpus and its text, or one error line before the lesson starts: a folder, an unreadable or
    non-UTF-8 file, or one too short for the model's windows."""
    path = Path(story.data) if story.data else CORPUS
    fix = "give a UTF-8 text file with --data" if story.data else "run from a minigpt checkout, or give --data FILE"
    if path.is_dir():
        raise MinigptError(f"{path}: is a folder; {fix}")
    if not path.is_file():
        raise MinigptError(f"{path}: no such file; {fix}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MinigptError(f"{path}: not UTF-8; convert it, e.g. for a GBK file `iconv -f GBK -t UTF-8 "
                           f"{path} > poems.txt`") from None
    if not text.strip():
        raise MinigptError(f"{path}: the file is empty; give a UTF-8 text file of at least {MIN_CHARS:,} characters")
    if len(text) < MIN_CHARS:
        raise MinigptError(f"{path}: {len(text):,} characters, too short for the lesson's model (it reads windows "
                           f"of {BLOCK} and validates on a tenth of the text); give at least {MIN_CHARS:,}")
    return path, text


def example_lines(text: str) -> Iterator[str]:
    """Lines of at least 6 characters and no spaces (a space would show as a blank target)."""
    return (ln.strip() for ln in text.splitlines() if len(ln.strip()) >= 6 and not re.search(r"\s", ln.strip()))


def example_line(text: str) -> str:
    """The lesson's line when the corpus has it, else its first line of at least 6 characters and no spaces."""
    if LINE in text:
        return LINE
    return next(example_lines(text), "".join(text.split())[:12])


def known(prompt: str, text: str) -> bool:
    """Every character of `prompt` occurs in the corpus: the char tokenizer has an id for it, not the unknown id."""
    return set(prompt) <= set(text)


def prompts(text: str, wanted: tuple[str, ...]) -> list[str]:
    """Each of `wanted` whose characters all occur in the corpus, else the first half of another corpus line: a
    character the model never saw becomes the unknown id, and the model would continue something else."""
    line = example_line(text)
    halves = [ln[:len(ln) // 2] for ln in itertools.islice(example_lines(text), len(wanted) + 1) if ln != line]
    spare = itertools.cycle(halves or [line[:len(line) // 2]])
    return [w if known(w, text) else next(spare) for w in wanted]


def model_dir(story: Story) -> Path:
    """Where the lesson's model goes: --quick has a folder of its own, so it never replaces the full model."""
    return (story.png or Path("checkpoints/learn")) / ("chinese-gpt-quick" if story.quick else "chinese-gpt")


def train_model(story: Story, path: Path, text: str, run_dir: Path) -> dict[str, Any] | None:
    """A character GPT on the corpus, by the one training loop (`pretrain`), for a fixed wall-clock time; None
    when Ctrl-C stopped it (the partial model is dropped and the earlier one, if any, stays)."""
    from ..models.gpt import GPTConfig
    from ..train.pretrain import pretrain
    from ..train.trainer import TrainConfig

    quick = story.quick
    model = GPTConfig(n_layer=4, n_head=4, n_embd=64 if quick else 128, block_size=BLOCK, dropout=0.1, vocab_size=1)
    train = TrainConfig(max_iters=10**9, max_seconds=QUICK_SECONDS if quick else SECONDS, batch_size=16, lr=3e-3,
                        min_lr=3e-4, warmup_iters=20 if quick else 100, eval_interval=50 if quick else 300,
                        eval_iters=4 if quick else 20, sample_tokens=0 if quick else 24, seed=story.seed,
                        device=story.device, keep_checkpoints=1)
    try:  # a rerun replaces the last lesson's model only once the new one is saved
        with atomic_dir(run_dir) as tmp:
            result = pretrain(str(path), tokenizer="char", model_config=model, train_config=train, out=tmp,
                              sample_prompt=PROMPT if known(PROMPT, text) else "")
            if result.interrupted:
                raise KeyboardInterrupt  # atomic_dir drops the partial model
    except KeyboardInterrupt:  # the first Ctrl-C stops after a step, a second one at once
        return None
    return {"steps": result.step, "metrics": result.metrics, "best_val": result.best_val}


def legend(story: Story) -> Any:
    """The colour key of the influence lines, in the story's language."""
    from rich.text import Text

    from ..lens import views

    if not story.zh:
        return views.influence_legend()
    out = Text("颜色：", style="dim")
    out.append(" 预测出的字 ", style=f"bold white on {views.CURRENT}")
    out.append(" ")
    for x in (1.0, 0.25, 0.05, 0.0):
        out.append(f" {100 * x:g}% ", style=views.influence_style(x))
    out.append("  前面的字按预测它的查询所给的注意力着色（平方根刻度）；行末是注意力最强的 3 个位置:字", style="dim")
    return out


def show_influence(story: Story, run_dir: Path, prompt: str) -> dict[str, Any]:
    """`minigpt inspect generate`'s view of a continuation: terminal lines, then the HTML page and the PNG."""
    from rich.markup import escape

    from ..checkpoint import load_checkpoint
    from ..common import resolve_device
    from ..infer.engine import Engine
    from ..infer.sampling import SamplingConfig
    from ..lens import attention as insp
    from ..lens import plots, views
    from ..lens.page import save_html

    ckpt = load_checkpoint(run_dir / "best", device=resolve_device(story.device))  # the lowest validation loss
    model, tok = ckpt.model, ckpt.tokenizer
    ids = insp.encode_text(tok, prompt)
    config = SamplingConfig(temperature=0.8, top_k=20, max_new_tokens=18, seed=story.seed)
    layer, head = model.config.n_layer - 1, "mean"
    steps = views.print_steps(insp.stream_influence(Engine(model, tok), ids, config), ids, tok, layer, head,
                              window=48, show=console.print)
    console.print(legend(story))
    generated = [s.token_id for s in steps]
    text = "".join(s.text for s in steps)
    out: dict[str, Any] = {"continuation": text, "tokens": len(steps), "html": None, "png": None}
    if story.png is not None:
        rec = insp.record(model, tok, ids + generated, prompt_len=len(ids))
        out["html"] = save_html(rec, story.png / "chinese_influence.html", layer=layer, head=head,
                                title="minigpt learn chinese", info=insp.describe(ckpt))
        out["png"] = story.png / "chinese_attention.png"
        for note in plots.save_png(rec, out["png"], layer, head, window=48,
                                   title=f"minigpt learn chinese · {insp.describe(ckpt)}"):
            console.print(f"[yellow]note:[/] {escape(note)}")
        story.say("page: {html} (open it in a browser: pick a layer and head, step through the influence view); "
                  "picture: {png}", "网页：{html}（用浏览器打开：可以选层和头，逐字播放影响视图）；图：{png}",
                  html=str(out["html"]), png=str(out["png"]))
    return out


def run(story: Story) -> dict[str, Any]:
    path, text = corpus(story)  # first: a bad --data is one error line, nothing else
    run_dir = model_dir(story)
    story.title("Lesson 7 · next-character prediction on Tang poems", "第 7 课 · 在唐诗上预测下一个字")
    han = sum(1 for c in set(text) if HAN.match(c))  # 字: punctuation and line breaks are characters, not 字
    shipped = path.resolve() == CORPUS
    story.say("The corpus: {path}, {chars:,} characters ({distinct:,} distinct, {han:,} of them Chinese characters)."
              + (" It is a selection of 1,361 five-character poems by Li Bai, Du Fu, Wang Wei and Meng Haoran, over "
                 "1,200 years old." if shipped else ""),
              "语料：{path}，共 {chars} 个字符（{distinct} 种不同的字符，其中汉字 {han} 个）。"
              + ("这是李白、杜甫、王维、孟浩然的 1361 首五言诗，都有一千二百多年的历史。" if shipped else ""),
              path=str(path), chars=len(text), distinct=len(set(text)), han=han)
    line = example_line(text)
    pairs = training_pairs(line)
    story.say("A language model learns one thing: given the text so far, the next character. One line holds "
              "{n} such examples, each prefix growing by one:",
              "语言模型只学一件事：给定前面的文字，预测下一个字。一行诗里就有 {n} 个这样的样例，前缀每次长一个字：",
              n=len(pairs))
    story.say("  " + " → ".join(line[:i] for i in range(1, len(line) + 1)), "  " + " → ".join(
              line[:i] for i in range(1, len(line) + 1)))
    story.table([story.t("input (x)", "输入（x）"), story.t("target (y)", "目标（y）")], pairs[:6])
    story.say("Training does all of them at once: a window of T characters is the input x = ids[:-1] and the "
              "target y = ids[1:], and the causal mask keeps position t from seeing t+1. Now a 4-layer character "
              "GPT trains on the poems for {s:.0f} seconds, through the same `pretrain` as `minigpt pretrain`; the "
              "model goes to {run} once it is saved (Ctrl-C keeps the one there):",
              "训练时这些样例一次算完：长度为 T 的窗口，输入是 x = ids[:-1]，目标是 y = ids[1:]，因果掩码保证位置 t "
              "看不见 t+1。下面用和 `minigpt pretrain` 相同的 `pretrain`，在这些诗上训练一个 4 层的字符级 GPT，"
              "{s:.0f} 秒；训练完保存到 {run}（按 Ctrl-C 中断则保留那里原有的模型）：",
              s=QUICK_SECONDS if story.quick else SECONDS, run=str(run_dir))
    trained = train_model(story, path, text, run_dir)
    if trained is None:
        kept = (run_dir / "best").exists()  # the pointer to the earlier run's best step
        err_console.print(story.t("[yellow]interrupted:[/] " + ("the earlier model in {run} is kept" if kept else
                                                                 "no model saved (nothing in {run})"),
                                  "[yellow]已中断：[/]" + ("保留 {run} 里原有的模型" if kept else "没有保存模型（{run} 里没有）"),
                                  run=str(run_dir)), soft_wrap=True)
        return {"interrupted": True, "run_dir": run_dir, "kept": kept}
    prompt = PROMPT if line == LINE else line[:len(line) // 2]
    story.say("{steps:,} steps, validation loss {val:.2f} nats per character (a uniform guess over {v:,} characters "
              "would be {uniform:.2f}). The continuation of “{prompt}”, one character at a time: red is the new "
              "character, the earlier ones are blue where its prediction attended strongly and grey where weakly "
              "(last layer, mean of the heads):",
              "训练了 {steps} 步，验证损失 {val:.2f} 纳特/字（在 {v} 个字符里均匀随机猜测是 {uniform:.2f}）。"
              "下面逐字续写「{prompt}」：红色是新生成的字，前面的字按它预测时的注意力着色，"
              "蓝色表示关注得多，灰色表示关注得少（最后一层，各头平均）：",
              steps=trained["steps"], val=trained["best_val"], v=len(set(text)),
              uniform=math.log(len(set(text))), prompt=prompt)
    shown = show_influence(story, run_dir, prompt)
    first, second = prompts(text, NEXT_PROMPTS)
    story.next("`minigpt inspect generate --checkpoint {run} \"{a}\" --html page.html` continues any "
               "line with this view; `minigpt sample --checkpoint {run} \"{b}\"` just writes.",
               "`minigpt inspect generate --checkpoint {run} \"{a}\" --html page.html` 可以用同样的视图续写"
               "任何一句；`minigpt sample --checkpoint {run} \"{b}\"` 只管写。", run=str(run_dir), a=first, b=second)
    return {"pairs": pairs, "line": line, "run_dir": run_dir, "next_prompts": [first, second], **trained, **shown}
