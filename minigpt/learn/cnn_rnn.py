"""Lesson 5, cnn-rnn: networks for sequences. A convolution sees its neighbours; a recurrent cell remembers.

1. Convolution over a sequence: output N = w0*x[N-1] + w1*x[N] + w2*x[N+1], the same three weights at every
   position (checked against torch's conv1d). minigpt's CNN baseline (models/cnn.py) is causal (it never sees
   N+1) and doubles its dilation per layer: 6 layers of kernel 2 see exactly 64 positions, measured by which
   inputs get a gradient.
2. The cells, written out and checked against minigpt's RNN baseline (models/rnn.py, torch's nn.RNN/LSTM/GRU
   inside): RNN h' = tanh(W x + U h + b), one weight set; LSTM with input, forget and output gates and a cell
   candidate, 4 weight sets, c' = f*c + i*g, h' = o*tanh(c'); GRU with reset and update gates and a candidate,
   3 weight sets, h' = (1-z)*n + z*h.
3. Remember the first symbol (tasks.RememberFirst): one of 8 symbols, 1 to 64 random distractors, then "?".
   Each cell with a 64-wide state, 600 AdamW steps at lr 1e-2 (--quick: 300 steps, up to 32 distractors), tested
   on 1 to 128 distractors. Measured (seed 0): the LSTM and GRU 100% at every gap, even 128, twice the longest
   they trained on; the tanh RNN far less, and how much less varies with the run (2 torch threads: 63% after one
   distractor, ~50% from 16 on; 1 thread: 47%, then ~25% from 4 on; chance is 12.5%). The forget gate (biased to
   keep, f ~ 1) lets the LSTM's cell state carry the symbol unchanged.
   The RNN's trouble is learning, not capacity: trained with mostly short gaps first (log-uniform gaps) the same
   RNN holds the symbol across 128 too; with every gap equally likely, its gradient through many tanh steps
   vanishes and the long gaps teach it little.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..common import resolve_device
from ..models.cnn import CNN, CNNConfig
from ..models.rnn import GATES, RNN, RNNConfig
from .story import Story, figure
from .tasks import RememberFirst, accuracy_by_gap, fit

KERNEL = (1.0, 2.0, 3.0)
EVAL_GAPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
HIDDEN = 64
LR = 1e-2


def conv_at(x: list[float], w: tuple[float, float, float], n: int) -> float:
    """The output at position n: positions n-1, n and n+1 weighted by w
    (zero outside the sequence)."""
    seen = [x[i] if 0 <= i < len(x) else 0.0 for i in (n - 1, n, n + 1)]
    return sum(wi * xi for wi, xi in zip(w, seen))


def receptive_field(config: CNNConfig, t: int) -> list[int]:
    """Input positions whose embedding changes minigpt's CNN features at position t (a nonzero gradient)."""
    torch.manual_seed(0)
    model = CNN(config)
    kept: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, inputs: Any, out: torch.Tensor) -> None:
        out.retain_grad()  # the embedded inputs: their gradient shows which positions matter
        kept.append(out)

    model.wte.register_forward_hook(keep)
    idx = torch.randint(0, config.vocab_size, (1, config.block_size))
    model.features(idx)[0, t].sum().backward()
    return (kept[0].grad[0].abs().sum(-1) > 0).nonzero()[:, 0].tolist()


def rnn_cell(x: torch.Tensor, h: torch.Tensor,
             W: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.tanh(x @ W["weight_ih_l0"].T + W["bias_ih_l0"]
                      + h @ W["weight_hh_l0"].T + W["bias_hh_l0"])


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
              W: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """4 weight sets, stacked in torch's order: input gate, forget gate,
    cell candidate, output gate."""
    i, f, g, o = (x @ W["weight_ih_l0"].T + W["bias_ih_l0"]
                  + h @ W["weight_hh_l0"].T + W["bias_hh_l0"]).chunk(4, -1)
    i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
    g = torch.tanh(g)
    c = f * c + i * g  # forget some old memory, write some of the candidate
    return o * torch.tanh(c), c  # show some of the memory


def gru_cell(x: torch.Tensor, h: torch.Tensor,
             W: dict[str, torch.Tensor]) -> torch.Tensor:
    """3 weight sets: reset gate, update gate, candidate."""
    xr, xz, xn = (x @ W["weight_ih_l0"].T + W["bias_ih_l0"]).chunk(3, -1)
    hr, hz, hn = (h @ W["weight_hh_l0"].T + W["bias_hh_l0"]).chunk(3, -1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    # the reset gate decides how much of the past the candidate sees
    n = torch.tanh(xn + r * hn)
    # the update gate mixes the candidate with the old state
    return (1 - z) * n + z * h


@torch.no_grad()
def check_cell(kind: str, steps: int = 12) -> dict[str, Any]:
    """Run the hand-written cell over a random sequence with the weights of minigpt's RNN(kind); compare."""
    torch.manual_seed(0)
    model = RNN(RNNConfig(kind=kind, vocab_size=10, block_size=steps, n_embd=8, n_hidden=16, n_layer=1))
    W = dict(model.rnn.named_parameters())
    idx = torch.randint(0, 10, (2, steps))
    x, h, c = model.wte(idx), torch.zeros(2, 16), torch.zeros(2, 16)
    outs = []
    for t in range(steps):
        if kind == "lstm":
            h, c = lstm_cell(x[:, t], h, c, W)
        else:
            h = (rnn_cell if kind == "rnn" else gru_cell)(x[:, t], h, W)
        outs.append(h)
    diff = (torch.stack(outs, 1) - model.features(idx)).abs().max().item()
    return {"weight_sets": W["weight_ih_l0"].shape[0] // 16, "params": sum(p.numel() for p in W.values()),
            "max_diff": diff}


def copy_task(story: Story) -> dict[str, dict[int, float]]:
    """Train an RNN, an LSTM and a GRU (same state width) to remember the first symbol; accuracy per gap."""
    task = RememberFirst(max_gap=32 if story.quick else 64)
    steps = 300 if story.quick else 600
    g = torch.Generator().manual_seed(1)
    tests = [task.batch(200, g, gap) for gap in EVAL_GAPS]  # up to 128: longer than any gap seen in training
    curves = {}
    for kind in ("rnn", "lstm", "gru"):
        torch.manual_seed(story.seed)
        model = RNN(RNNConfig(kind=kind, vocab_size=task.vocab_size, block_size=task.block_size, n_embd=16,
                              n_hidden=HIDDEN, n_layer=1)).to(resolve_device(story.device))
        fit(model, lambda gen: task.batch(64, gen), lr=LR, steps=steps, seed=story.seed, label=kind)
        curves[kind] = accuracy_by_gap(model, tests)
    return curves


def draw(story: Story, x: list[float], out: list[float], field: list[int], t: int,
         curves: dict[str, dict[int, float]]) -> Any:
    fig = figure(story, 13, 3.8)
    ax = fig.add_subplot(1, 3, 1)
    ax.bar(range(len(x)), x, color="#90caf9", label="x")
    ax.plot(range(len(out)), out, "o-", color="#d32f2f", label=f"conv, w = {KERNEL}")
    ax.set(xlabel=story.label("position", "位置"), title=story.label("an input reaches N−1, N, N+1",
                                                                   "一个输入影响 N−1、N、N+1"))
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 3, 2)
    ax.bar(field, [1] * len(field), width=1.0, color="#1565c0")
    ax.axvline(t, color="#d32f2f")
    ax.set(xlim=(0, t + 8), yticks=[], xlabel=story.label("input position", "输入位置"),
           title=story.label(f"minigpt CNN at {t}: sees {len(field)} positions",
                             f"minigpt CNN 在位置 {t}：看见 {len(field)} 个位置"))
    ax = fig.add_subplot(1, 3, 3)
    styles = {"rnn": dict(marker="o", lw=2), "lstm": dict(marker="s", lw=5, alpha=0.5), "gru": dict(marker="^", ls="--")}
    for kind, acc in curves.items():  # LSTM and GRU often coincide at 100%: a wide pale line under a dashed one
        ax.plot(list(acc), list(acc.values()), label=kind, **styles[kind])
    ax.axhline(1 / 8, color="grey", ls="--", lw=1, label=story.label("chance", "随机猜测"))
    ax.set(xscale="log", ylim=(0, 1.03), xlabel=story.label("distractors between symbol and ?", "符号与 ? 之间的干扰数"),
           ylabel=story.label("accuracy", "准确率"), title=story.label("remember the first symbol", "记住第一个符号"))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def convolutions(story: Story) -> dict[str, Any]:
    """Part 1: a 3-wide convolution by hand against torch's, then the receptive field of minigpt's CNN."""
    story.say("A convolution slides the same few weights along the sequence: the output at position N sees "
              "positions [bold]N−1, N and N+1[/]. Three weights, however long the sequence.",
              "卷积把同一组少量权重沿序列滑动：位置 N 的输出看见位置 [bold]N−1、N、N+1[/]。"
              "不管序列多长，都只有这三个权重。")
    story.code(conv_at)
    x = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0]
    out = [conv_at(x, KERNEL, n) for n in range(len(x))]
    torch_out = F.conv1d(torch.tensor([[x]]), torch.tensor([[KERNEL]]), padding=1)[0, 0].tolist()
    story.table(["N", "x[N]", story.t("output", "输出"), "torch conv1d"],
                [(n, f"{a:g}", f"{b:g}", f"{c:g}") for n, (a, b, c) in enumerate(zip(x, out, torch_out))])
    cnn = CNNConfig(vocab_size=8, block_size=96, n_embd=16, n_layer=6)
    t = 80
    field = receptive_field(cnn, t)
    story.say("minigpt's CNN baseline is causal (a language model must not see N+1) and doubles the dilation "
              "each layer ({dil}): the features at position {t} depend on positions {lo}..{hi}, exactly {n} "
              "inputs (the gradient says so), which is its receptive field 1 + Σ dilations = {rf}. Nothing "
              "further back can matter.",
              "minigpt 的 CNN 基线是因果的（语言模型不能看见 N+1），并且每层把膨胀系数翻倍（{dil}）："
              "位置 {t} 的特征只依赖位置 {lo}..{hi}，恰好 {n} 个输入（梯度可以证明），也就是它的感受野 "
              "1 + Σ 膨胀系数 = {rf}。再往前的内容一概不起作用。",
              dil=", ".join(map(str, cnn.dilations)), t=t, lo=field[0], hi=field[-1], n=len(field),
              rf=cnn.receptive_field)
    return {"x": x, "conv": out, "conv_torch": torch_out, "receptive_field": field, "t": t,
            "cnn_receptive_field": cnn.receptive_field}


def run(story: Story) -> dict[str, Any]:
    story.title("Lesson 5 · convolutions and recurrent cells", "第 5 课 · 卷积与循环单元")
    conv = convolutions(story)
    story.say("A recurrent cell instead carries a state h from step to step. The three cells, by hand:",
              "循环单元则把状态 h 一步一步传下去。三种单元，手写如下：")
    for fn in (rnn_cell, lstm_cell, gru_cell):
        story.code(fn)
    cells = {kind: check_cell(kind) for kind in ("rnn", "lstm", "gru")}
    story.table([story.t("cell", "单元"), story.t("weight sets", "权重组数"), story.t("parameters (8 in, 16 state)",
                 "参数（输入 8，状态 16）"), story.t("max difference from minigpt's RNN", "与 minigpt RNN 的最大差")],
                [(k, v["weight_sets"], v["params"], f"{v['max_diff']:.1e}") for k, v in cells.items()])
    story.say("The LSTM has 4 weight sets (input, forget and output gates and the cell candidate), the GRU 3 (reset "
              "and update gates and the candidate), the plain RNN 1: the same parameter budget buys the RNN a wider "
              "state. Now a memory test: one of 8 symbols, then a run of random distractors, then [bold]?[/]: "
              "answer the first symbol. Each cell gets a {h}-wide state.",
              "LSTM 有 4 组权重（输入门、遗忘门、输出门和候选记忆），GRU 有 3 组（重置门、更新门和候选状态），"
              "普通 RNN 只有 1 组：同样的参数量，RNN 可以换来更宽的状态。下面做个记忆测试：先给 8 个符号中的一个，"
              "再给一串随机干扰符号，最后是 [bold]?[/]：要回答第一个符号。每种单元的状态宽度都是 {h}。", h=HIDDEN)
    curves = copy_task(story)
    gaps = list(curves["rnn"])
    story.table([story.t("distractors", "干扰数")] + list(curves),
                [(gp, *(f"{curves[k][gp]:.0%}" for k in curves)) for gp in gaps])
    long = [gp for gp in gaps if gp >= 16]
    mean = {k: sum(curves[k][gp] for gp in long) / len(long) for k in curves}
    story.say("Trained on up to {g} distractors and tested on up to 128: the RNN is right {first:.0%} of the time "
              "after one distractor and {rnn:.0%} from 16 on (chance: 12.5%); the LSTM {lstm:.0%} and the GRU "
              "{gru:.0%} from 16 on. The tanh RNN rewrites its whole state at every step, so what it saw fades, and "
              "the gradient that should teach it to keep the symbol shrinks at every step back through the tanh. The "
              "LSTM's forget gate can stay at ~1, so its cell state carries the symbol unchanged for as long as it "
              "is needed. (The RNN's problem is learning, not room: trained with mostly short gaps first, this "
              "same RNN does learn to hold one symbol.)",
              "训练时最多 {g} 个干扰，测试到 128 个：RNN 在 1 个干扰之后的准确率是 {first:.0%}，干扰达到 16 个及以上时是 "
              "{rnn:.0%}（随机猜测是 12.5%）；LSTM 和 GRU 在干扰达到 16 个及以上时分别是 {lstm:.0%} 和 {gru:.0%}。"
              "tanh RNN 每一步都重写整个状态，看过的东西会逐渐淡掉；本该教会它记住符号的梯度，"
              "每往回传一步都要穿过一次 tanh，越传越小。LSTM 的遗忘门可以一直保持在 1 附近，"
              "于是细胞状态能把这个符号原封不动地一直带下去。（RNN 的问题在于学不会，而不是装不下："
              "如果先用以短间隔为主的数据训练，同一个 RNN 也能学会记住一个符号。）",
              g=32 if story.quick else 64, first=curves["rnn"][1], **mean)
    story.picture(draw(story, conv["x"], conv["conv"], conv["receptive_field"], conv["t"], curves), "cnn_rnn_memory")
    story.next("`minigpt learn why-attention`: a task where even the LSTM forgets, and attention does not.",
               "`minigpt learn why-attention`：连 LSTM 都会忘的任务，注意力却不会忘。")
    return {**conv, "cells": cells, "copy": curves, "long_gap_accuracy": mean, "gates": dict(GATES)}
