"""Lesson 2, perceptron: learn the weights from examples; see why XOR needs a hidden layer.

Rosenblatt's perceptron rule (1958): show an example x with target t, compute y = 1 if w.x + b > 0 else 0, and
move the weights by delta w = eta (t - y) x (and delta b = eta (t - y)): nothing when right, towards x when it
said 0 for a 1, away from x when it said 1 for a 0. From w = (0, 0), b = 0 and eta = 0.1 it learns AND in 6
passes over the four examples and OR in 4. The convergence theorem promises this for any data that one line can
separate, and XOR is not such data: w2 > -b and w1 > -b (the 1s at (0,1) and (1,0)) add up to w1 + w2 > -2b,
while (0,0) -> 0 needs b <= 0 and (1,1) -> 0 needs w1 + w2 <= -b, so -b >= w1 + w2 > -2b, i.e. b > 0: a
contradiction. The rule then cycles: the weights after pass 3 equal those after pass 2, forever.
A 2-2-1 network (two sigmoid hidden units) trained by backpropagation bends the boundary and solves it; some
random starts get stuck (a local minimum: after 2,000 steps some output is still on the wrong side of 0.5; seed 0:
the first three), and the lesson restarts them from the next seed.
"""
from __future__ import annotations

from typing import Any

from .neuron import INPUTS
from .story import Story, figure

DATA = {"AND": (0, 0, 0, 1), "OR": (0, 1, 1, 1), "XOR": (0, 1, 1, 0)}  # targets on (0,0), (0,1), (1,0), (1,1)
ETA = 0.1
MAX_PASSES = 20
XOR_STEPS = 2000  # gradient steps of the 2-2-1 network from each random start


def predict(w: list[float], b: float, x: tuple[int, int]) -> int:
    return 1 if w[0] * x[0] + w[1] * x[1] + b > 0 else 0


def perceptron_step(w: list[float], b: float, x: tuple[int, int], t: int,
                    eta: float = ETA) -> tuple[list[float], float]:
    """One application of the rule: delta w = eta (t - y) x,
    delta b = eta (t - y)."""
    y = predict(w, b, x)
    step = eta * (t - y)  # 0 when right
    return [w[0] + step * x[0], w[1] + step * x[1]], b + step


def train_perceptron(targets: tuple[int, ...], eta: float = ETA, max_passes: int = MAX_PASSES) -> dict[str, Any]:
    """Passes over the four examples until one has no error (converged) or the weights repeat (a cycle)."""
    w, b = [0.0, 0.0], 0.0
    passes: list[dict[str, Any]] = []
    seen: dict[tuple[float, ...], int] = {}
    for n in range(1, max_passes + 1):
        errors = 0
        for x, t in zip(INPUTS, targets):
            errors += predict(w, b, x) != t
            w, b = perceptron_step(w, b, x, t, eta)
        passes.append({"pass": n, "errors": errors, "w": list(w), "b": b})
        if errors == 0:
            return {"converged": True, "passes": passes, "w": w, "b": b, "cycle": None}
        state = (round(w[0], 9), round(w[1], 9), round(b, 9))
        if state in seen:  # the same weights start the same pass again: it will repeat forever
            return {"converged": False, "passes": passes, "w": w, "b": b, "cycle": (seen[state], n)}
        seen[state] = n
    return {"converged": False, "passes": passes, "w": w, "b": b, "cycle": None}


def train_xor_net(seed: int, steps: int = XOR_STEPS, lr: float = 2.0, tries: int = 10) -> dict[str, Any]:
    """A 2-2-1 sigmoid network fitted to XOR by gradient descent on the mean of (y - t)^2 / 2; a start that
    ends stuck (an output on the wrong side of 0.5) is restarted with the next seed."""
    import torch

    x = torch.tensor(INPUTS, dtype=torch.float32)
    t = torch.tensor(DATA["XOR"], dtype=torch.float32)[:, None]
    from ..infer.sampling import nth_seed

    for attempt in range(tries):
        torch.manual_seed(nth_seed(seed, attempt))  # seed + attempt, kept in torch's range
        net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sigmoid(), torch.nn.Linear(2, 1), torch.nn.Sigmoid())
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        for _ in range(steps):
            loss = ((net(x) - t) ** 2 / 2).mean()
            opt.zero_grad()
            loss.backward()  # backpropagation (lesson 3 does it by hand)
            opt.step()
        y = net(x).detach()[:, 0]
        if ((y > 0.5).int() == t[:, 0].int()).all():
            return {"net": net, "outputs": y.tolist(), "loss": loss.item(), "seed": nth_seed(seed, attempt),
                    "restarts": attempt}
    raise RuntimeError(f"the 2-2-1 network did not solve XOR from {tries} random starts")


def draw(story: Story, runs: dict[str, dict[str, Any]], xor_net: dict[str, Any]) -> Any:
    import numpy as np
    import torch

    fig = figure(story, 13, 3.6)
    xs = np.linspace(-0.25, 1.25, 2)
    grid = np.linspace(-0.25, 1.25, 151)
    gx, gy = np.meshgrid(grid, grid)
    sides = dict(levels=[-0.5, 0.5, 1.5], colors=["#e3f2fd", "#ffcdd2"])  # blue: output 0, red: output 1

    def points(ax, targets):
        for (x1, x2), t in zip(INPUTS, targets):
            ax.scatter([x1], [x2], s=160, c="#d32f2f" if t else "white", edgecolors="#d32f2f", lw=2, zorder=3)
        ax.set(xlim=(-0.25, 1.25), ylim=(-0.25, 1.25), xlabel="x1", ylabel="x2", aspect="equal")

    for i, name in enumerate(("AND", "OR")):
        ax = fig.add_subplot(1, 4, i + 1)
        w, b = runs[name]["w"], runs[name]["b"]
        ax.contourf(gx, gy, (w[0] * gx + w[1] * gy + b > 0).astype(float), **sides)  # the side that fires
        points(ax, DATA[name])
        ax.plot(xs, (-b - w[0] * xs) / w[1], color="#1565c0", lw=2)
        ax.set_title(story.label(f"{name}: learned in {len(runs[name]['passes'])} passes",
                                 f"{name}：{len(runs[name]['passes'])} 轮学会"))
    ax = fig.add_subplot(1, 4, 3)
    points(ax, DATA["XOR"])
    ax.set_title(story.label("XOR: no line separates", "XOR：没有直线能分开"))
    ax = fig.add_subplot(1, 4, 4)
    with torch.no_grad():
        z = xor_net["net"](torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32))
    ax.contourf(gx, gy, (z.numpy().reshape(gx.shape) > 0.5).astype(float), **sides)
    ax.contour(gx, gy, z.numpy().reshape(gx.shape), levels=[0.5], colors="#1565c0", linewidths=2)
    points(ax, DATA["XOR"])
    ax.set_title(story.label("2-2-1 net: XOR solved", "2-2-1 网络：解出 XOR"))
    fig.suptitle(story.label("red: output 1, blue: output 0 (a point exactly on a line gets 0: the rule is "
                             "w·x + b > 0); filled dots: target 1",
                             "红色区域输出 1，蓝色区域输出 0（正好在直线上的点输出 0：规则是 w·x + b > 0）；实心点：目标为 1"))
    return fig


def run(story: Story) -> dict[str, Any]:
    story.title("Lesson 2 · the perceptron learns its weights", "第 2 课 · 感知机自己学权重")
    story.say("Start from w = (0, 0), b = 0. Show an example x with target t; the neuron answers y. Then nudge "
              "the weights: [bold]Δw = η (t − y) x[/], Δb = η (t − y), with η = {eta}. Right answers change "
              "nothing; a wrong 0 moves w towards x, a wrong 1 moves it away.",
              "从 w = (0, 0)、b = 0 出发。给出一个样例 x 和目标 t，神经元给出答案 y，然后微调权重："
              "[bold]Δw = η (t − y) x[/]，Δb = η (t − y)，学习率 η = {eta}。答对了什么也不变；"
              "该输出 1 却输出 0，w 就朝 x 靠近；该输出 0 却输出 1，就远离 x。", eta=ETA)
    story.code(perceptron_step)
    runs = {name: train_perceptron(targets) for name, targets in DATA.items()}
    for name in ("AND", "OR", "XOR"):
        r = runs[name]
        rows = [(p["pass"], p["errors"], f"({p['w'][0]:.1f}, {p['w'][1]:.1f})", f"{p['b']:.1f}") for p in r["passes"]]
        story.table([story.t("pass", "轮"), story.t("errors", "错误数"), story.t("w after", "更新后 w"),
                     story.t("b after", "更新后 b")], rows, title=name)
        if r["converged"]:
            story.say("{name}: learned in {n} passes (the last pass makes no error): w = ({w1:.1f}, {w2:.1f}), "
                      "b = {b:.1f}.", "{name}：{n} 轮学会（最后一轮没有错误）：w = ({w1:.1f}, {w2:.1f})，b = {b:.1f}。",
                      name=name, n=len(r["passes"]), w1=r["w"][0], w2=r["w"][1], b=r["b"])
    a, b_ = runs["XOR"]["cycle"]
    story.say("XOR never converges: the weights after pass {b} are the weights after pass {a}, so the same passes "
              "repeat forever, each with errors. No line can do it. The 1s at (0,1) and (1,0) need w2 > −b and "
              "w1 > −b, so w1 + w2 > −2b; the 0s need b ≤ 0 at (0,0) and w1 + w2 ≤ −b at (1,1). Together "
              "−b ≥ w1 + w2 > −2b, so b > 0: a contradiction.",
              "XOR 永远不收敛：第 {b} 轮后的权重和第 {a} 轮后一模一样，于是同样的几轮会无限重复，每一轮都有错。"
              "任何一条直线都做不到：(0,1) 和 (1,0) 要输出 1，需要 w2 > −b 且 w1 > −b，所以 w1 + w2 > −2b；"
              "(0,0) 要输出 0 需要 b ≤ 0，(1,1) 要输出 0 需要 w1 + w2 ≤ −b。合起来 −b ≥ w1 + w2 > −2b，"
              "推出 b > 0，自相矛盾。", a=a, b=b_)
    net = train_xor_net(story.seed)
    story.say("Add a hidden layer: a 2-2-1 network (two sigmoid units, then one) trained by backpropagation on "
              "(y − t)²/2. Outputs on (0,0), (0,1), (1,0), (1,1): {outs}, loss {loss:.4f}"
              + (", after {r} restart(s): a start that gets stuck, with some output still on the wrong side of "
                 "0.5 after {steps:,} steps, is tried again from the next seed." if net["restarts"] else "."),
              "加一个隐藏层：2-2-1 网络（两个 sigmoid 单元，再接一个），用反向传播最小化 (y − t)²/2。"
              "在 (0,0)、(0,1)、(1,0)、(1,1) 上的输出：{outs}，损失 {loss:.4f}"
              + ("。此前重新开始了 {r} 次：训练 {steps} 步后仍有输出落在 0.5 错误一侧的初始化算作卡住，换下一个种子重来。"
                 if net["restarts"] else "。"),
              outs=("、" if story.zh else ", ").join(f"{y:.2f}" for y in net["outputs"]), loss=net["loss"],
              r=net["restarts"], steps=XOR_STEPS)
    story.picture(draw(story, runs, net), "perceptron_xor")
    story.next("`minigpt learn backprop`: what loss.backward() computed, by hand, one SGD step at a time.",
               "`minigpt learn backprop`：亲手算一遍 loss.backward() 做了什么，一步一步地做随机梯度下降。")
    return {"runs": runs, "xor_net": {k: v for k, v in net.items() if k != "net"}}
