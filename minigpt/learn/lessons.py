"""The lessons of `minigpt learn`, in order, and the runner: from one neuron to attention on Chinese poems.

Each lesson is one module of this package with `run(story) -> dict` (the numbers it showed, for tests); the
modules are imported only when their lesson runs, so `minigpt learn` lists them instantly.
"""
from __future__ import annotations

import difflib
import importlib
import time
from dataclasses import dataclass
from typing import Any

from ..common import MinigptError
from .story import Story


@dataclass(frozen=True)
class Lesson:
    name: str
    module: str
    en: str
    zh: str
    minutes: float  # a full run on 2 CPU cores, measured


LESSONS: tuple[Lesson, ...] = (
    Lesson("neuron", "neuron", "a threshold neuron is a logic gate: AND, OR, NAND, and the line it draws",
           "阈值神经元就是逻辑门：与、或、与非，以及它画出的直线", 0.1),
    Lesson("perceptron", "perceptron", "the perceptron rule learns AND and OR; XOR needs a hidden layer",
           "感知机规则学会与门和或门；异或需要隐藏层", 0.1),
    Lesson("backprop", "backprop", "SGD by hand on y = 2x + 1: every update, the loss surface, autograd check",
           "手算 SGD 拟合 y=2x+1：逐次更新、损失曲面、自动求导对照", 0.1),
    Lesson("mnist", "mnist", "a 784-50-100-10 network reads handwritten digits (8x8 digits offline)",
           "784-50-100-10 网络识别手写数字（离线时用 8x8 数字）", 0.1),
    Lesson("cnn-rnn", "cnn_rnn", "convolution over a sequence; RNN, LSTM and GRU cells; who remembers longer",
           "序列上的卷积；RNN、LSTM、GRU 单元；谁记得更久", 0.4),
    Lesson("why-attention", "why_attention", "associative recall: a GPT with fewer parameters solves it, LSTM and "
           "GRU do not", "关联回忆：参数更少的 GPT 能解，LSTM 和 GRU 不能", 2.0),
    Lesson("chinese", "chinese", "next-token training on Tang poems, and what each new character attended to",
           "在唐诗上训练预测下一个字，再看每个新字关注了什么", 2.1),
)


def find(name: str) -> Lesson:
    for lesson in LESSONS:
        if lesson.name == name:
            return lesson
    names = [lesson.name for lesson in LESSONS]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(names)}"
    raise MinigptError(f"no lesson {name!r}; {hint} (`minigpt learn` lists them)")


def next_lesson(name: str) -> Lesson | None:
    names = [lesson.name for lesson in LESSONS]
    i = names.index(name)
    return LESSONS[i + 1] if i + 1 < len(LESSONS) else None


def run(name: str, story: Story) -> dict[str, Any]:
    """Run one lesson; returns its numbers and `seconds`, the wall time it took."""
    lesson = find(name)
    module = importlib.import_module(f"{__package__}.{lesson.module}")
    t0 = time.perf_counter()
    result = module.run(story)
    result["seconds"] = time.perf_counter() - t0
    return result


def listing(lang: str = "en") -> Any:
    """The lessons as a rich table: number, name, what it shows, minutes for a full run."""
    from rich.table import Table

    zh = lang == "zh"
    table = Table("#", "lesson" if not zh else "课程", "what you will see" if not zh else "内容",
                  "minutes" if not zh else "分钟", box=None, pad_edge=False,
                  title="minigpt learn: from a neuron to attention" if not zh else "minigpt learn：从神经元到注意力")
    for i, lesson in enumerate(LESSONS, 1):
        table.add_row(str(i), f"[bold]{lesson.name}[/]", lesson.zh if zh else lesson.en, f"{lesson.minutes:g}")
    return table
