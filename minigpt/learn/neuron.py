"""Lesson 1, neuron: one threshold neuron is a logic gate, and its weights draw a line.

A neuron (McCulloch & Pitts, 1943) sums its weighted inputs and fires when the sum is above its threshold:
y = 1 if w1*x1 + w2*x2 > theta else 0. With w1 = w2 = 0.5 and theta = 0.7 only (1, 1) reaches 1.0 > 0.7: AND.
Lowering the threshold to 0.2 lets any single input through: OR. Negating everything (-0.5, -0.5, -0.7)
gives NAND. The boundary w1*x1 + w2*x2 = theta is a straight line in the (x1, x2) plane; the neuron answers 1
on one side of it. Stacking two layers (NAND and OR, then AND) computes XOR, which no single line can (lesson 2).
"""
from __future__ import annotations

from typing import Any

from .story import Story, figure

INPUTS = ((0, 0), (0, 1), (1, 0), (1, 1))
GATES: dict[str, tuple[float, float, float]] = {  # name: (w1, w2, threshold)
    "AND": (0.5, 0.5, 0.7),
    "OR": (0.5, 0.5, 0.2),
    "NAND": (-0.5, -0.5, -0.7),
}


def neuron(x1: float, x2: float, w1: float, w2: float, threshold: float) -> int:
    """Fire (1) when the weighted sum of the inputs is above the threshold,
    else stay silent (0)."""
    return 1 if w1 * x1 + w2 * x2 > threshold else 0


def gate(name: str, x1: int, x2: int) -> int:
    return neuron(x1, x2, *GATES[name])


def xor(x1: int, x2: int) -> int:
    """Two layers: XOR is 'at least one' (OR) and 'not both' (NAND)."""
    return gate("AND", gate("NAND", x1, x2), gate("OR", x1, x2))


def truth_tables() -> dict[str, list[int]]:
    """Each gate's outputs on (0,0), (0,1), (1,0), (1,1), and XOR from two layers."""
    tables = {name: [gate(name, *x) for x in INPUTS] for name in GATES}
    tables["XOR"] = [xor(*x) for x in INPUTS]
    return tables


def draw(story: Story) -> Any:
    """Each gate's four points (filled: output 1) and its line w1*x1 + w2*x2 = threshold."""
    import numpy as np

    fig = figure(story, 10, 3.4)
    xs = np.linspace(-0.25, 1.25, 2)
    for i, (name, (w1, w2, th)) in enumerate(GATES.items()):
        ax = fig.add_subplot(1, len(GATES), i + 1)
        for (x1, x2) in INPUTS:
            on = gate(name, x1, x2)
            ax.scatter([x1], [x2], s=160, c="#d32f2f" if on else "white", edgecolors="#d32f2f", linewidths=2,
                       zorder=3)
        ax.plot(xs, (th - w1 * xs) / w2, color="#1565c0", lw=2)
        ax.set(xlim=(-0.25, 1.25), ylim=(-0.25, 1.25), xlabel="x1", ylabel="x2", aspect="equal",
               title=f"{name}: {w1:g}·x1 + {w2:g}·x2 > {th:g}")
        ax.grid(alpha=0.3)
    fig.suptitle(story.label("one neuron = one line (filled dots: output 1)", "一个神经元 = 一条直线（实心点：输出 1）"))
    return fig


def run(story: Story) -> dict[str, Any]:
    story.title("Lesson 1 · a neuron is a logic gate", "第 1 课 · 一个神经元就是一个逻辑门")
    story.say("A neuron multiplies each input by a weight, adds them up, and fires (1) when the sum is above its "
              "threshold; otherwise it stays at 0. This is all of it:",
              "神经元把每个输入乘上一个权重再相加，和超过阈值就“激活”（输出 1），否则输出 0。全部代码就这几行：")
    story.code(neuron)
    tables = truth_tables()
    for name, (w1, w2, th) in GATES.items():
        rows = [(x1, x2, f"{w1 * x1 + w2 * x2 + 0.0:g}", f"{'>' if y else '≤'} {th:g}", y)
                for (x1, x2), y in zip(INPUTS, tables[name])]
        story.say("[bold]{name}[/]: w1 = {w1:g}, w2 = {w2:g}, threshold = {th:g}",
                  "[bold]{name}[/]：w1 = {w1:g}，w2 = {w2:g}，阈值 = {th:g}", name=name, w1=w1, w2=w2, th=th)
        story.table(["x1", "x2", "w1·x1 + w2·x2", story.t("vs threshold", "与阈值比较"), "y"], rows)
    story.say("With w1 = w2 = 0.5 and threshold 0.7, only (1, 1) sums to 1.0 > 0.7: that is [bold]AND[/]. Lower "
              "the threshold to 0.2 and one input is enough: [bold]OR[/]. Flip every sign and you get "
              "[bold]NAND[/]. Same neuron, different weights: the weights are the program.",
              "w1 = w2 = 0.5、阈值 0.7 时，只有 (1, 1) 的和 1.0 超过 0.7：这就是[bold]与门（AND）[/]。把阈值降到 0.2，"
              "一个输入为 1 就够了：[bold]或门（OR）[/]。所有符号取反，就得到[bold]与非门（NAND）[/]。"
              "神经元还是同一个，只是权重不同：权重就是程序。")
    story.say("Geometrically, w1·x1 + w2·x2 = threshold is a straight line; the neuron says 1 on one side of it. "
              "Stack two layers, AND(NAND(x1, x2), OR(x1, x2)), and you get XOR: {xor}.",
              "从几何上看，w1·x1 + w2·x2 = 阈值 是一条直线，神经元在直线的一侧输出 1。"
              "叠两层，AND(NAND(x1, x2), OR(x1, x2))，就得到异或（XOR）：{xor}。",
              xor=" ".join(f"{x1}{x2}→{y}" for (x1, x2), y in zip(INPUTS, tables["XOR"])))
    story.picture(draw(story), "neuron_gates")
    story.next("`minigpt learn perceptron`: instead of choosing the weights by hand, learn them from examples, "
               "and see why one neuron can never compute XOR.",
               "`minigpt learn perceptron`：不再手工挑权重，而是从样例中学出来；并看看为什么单个神经元永远算不出异或。")
    return {"tables": tables, "gates": GATES}
