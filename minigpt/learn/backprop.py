"""Lesson 3, backprop: stochastic gradient descent by hand on y = w*x + b, checked against torch autograd.

The data are six noisy samples of y = 2x + 1, the loss of one example L = (y - t)^2 / 2, so the chain rule
gives dL/dy = y - t, dL/dw = (y - t) * x and dL/db = y - t. SGD takes the examples one at a time:
w <- w - lr * dL/dw, b <- b - lr * dL/db, with lr = 0.01 from w = 0.5, b = 0.6. The first two updates:
(0, 1): y = 0.6, y - t = -0.4, so b = 0.6 + 0.004 = 0.604 and w stays 0.5 (x = 0);
(1, 2.9): y = 1.104, y - t = -1.796, so w = 0.5 + 0.01796 = 0.51796 and b = 0.604 + 0.01796 = 0.62196.
With a constant rate SGD settles (a pass moves w and b by < 1e-9) after 795 passes at w = 2.0235,
b = 0.9480: near the least-squares line (2.0171, 0.9571), not on it, since every step leans towards the
example it just saw.
"""
from __future__ import annotations

from typing import Any

from .story import Story, figure

DATA = ((0, 1.0), (1, 2.9), (2, 5.1), (3, 7.0), (4, 8.8), (5, 11.2))  # (x, t): y = 2x + 1 plus noise
LR = 0.01
START = (0.5, 0.6)  # (w, b)
MAX_PASSES = 3000
TOLERANCE = 1e-9  # converged: a whole pass moved w and b by less than this


def gradients(w: float, b: float, x: float,
              t: float) -> tuple[float, float, float]:
    """Forward y = w*x + b, loss (y - t)^2 / 2; backward by the chain rule.
    Returns (loss, dL/dw, dL/db)."""
    y = w * x + b
    dy = y - t  # dL/dy
    # dL/dw = dL/dy * dy/dw = (y - t) * x;  dL/db = (y - t) * 1
    return dy * dy / 2, dy * x, dy


def sgd_step(w: float, b: float, x: float, t: float,
             lr: float = LR) -> tuple[float, float]:
    _, dw, db = gradients(w, b, x, t)
    return w - lr * dw, b - lr * db


def mean_loss(w: float, b: float) -> float:
    return sum(gradients(w, b, x, t)[0] for x, t in DATA) / len(DATA)


def train(lr: float = LR, max_passes: int = MAX_PASSES) -> dict[str, Any]:
    """SGD over DATA in order, pass after pass, until a pass moves (w, b) by less than TOLERANCE."""
    w, b = START
    path, updates, losses = [(w, b)], [], [mean_loss(w, b)]
    for n in range(1, max_passes + 1):
        before = (w, b)
        for x, t in DATA:
            y = w * x + b
            w, b = sgd_step(w, b, x, t, lr)
            path.append((w, b))
            if n == 1:  # the first pass, update by update
                _, dw, db = gradients(*path[-2], x, t)
                updates.append({"x": x, "t": t, "y": y, "dw": dw, "db": db, "w": w, "b": b})
        losses.append(mean_loss(w, b))
        if max(abs(w - before[0]), abs(b - before[1])) < TOLERANCE:
            break
    return {"w": w, "b": b, "passes": n, "path": path, "updates": updates, "losses": losses}


def least_squares() -> tuple[float, float]:
    """The exact minimum of the mean loss (the normal equations): where full-batch descent would end."""
    n = len(DATA)
    sx, st = sum(x for x, _ in DATA), sum(t for _, t in DATA)
    sxx, sxt = sum(x * x for x, _ in DATA), sum(x * t for x, t in DATA)
    w = (n * sxt - sx * st) / (n * sxx - sx * sx)
    return w, (st - w * sx) / n


def autograd_check(points: list[tuple[float, float]]) -> list[dict[str, float]]:
    """The hand-written gradients against torch autograd at the given (w, b), on every example."""
    import torch

    rows = []
    for w0, b0 in points:
        for x, t in DATA:
            w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
            b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
            ((w * x + b - t) ** 2 / 2).backward()
            _, dw, db = gradients(w0, b0, x, t)
            rows.append({"w": w0, "b": b0, "x": x, "t": t, "dw": dw, "db": db, "auto_dw": w.grad.item(),
                         "auto_db": b.grad.item()})
    return rows


def draw(story: Story, run: dict[str, Any], ls: tuple[float, float]) -> Any:
    import numpy as np

    fig = figure(story, 11, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    ws, bs = np.linspace(0.2, 2.6, 200), np.linspace(-0.6, 2.2, 200)
    gw, gb = np.meshgrid(ws, bs)
    xs, ts = np.array([x for x, _ in DATA]), np.array([t for _, t in DATA])
    z = ((gw[..., None] * xs + gb[..., None] - ts) ** 2 / 2).mean(-1)
    ax.contour(gw, gb, np.log10(z), levels=20, cmap="Blues_r", linewidths=1)
    path = np.array(run["path"])
    ax.plot(path[:, 0], path[:, 1], color="#d32f2f", lw=1, marker=".", ms=2,
            label=story.label("SGD path, one dot per update", "SGD 路径，每次更新一个点"))
    ax.scatter([path[0, 0]], [path[0, 1]], c="black", zorder=3, label=f"start ({START[0]}, {START[1]})")
    ax.scatter([ls[0]], [ls[1]], marker="*", s=180, c="#2e7d32", zorder=3,
               label=story.label(f"least squares ({ls[0]:.3f}, {ls[1]:.3f})", f"最小二乘 ({ls[0]:.3f}, {ls[1]:.3f})"))
    ax.set(xlabel="w", ylabel="b", title=story.label("loss surface (log10 of mean L) and the path",
                                                      "损失曲面（平均 L 的 log10）与下降路径"))
    ax.legend(fontsize=8, loc="upper right")
    ax = fig.add_subplot(1, 2, 2)
    ax.loglog(range(1, len(run["losses"])), run["losses"][1:], color="#1565c0")
    ax.set(xlabel=story.label("pass over the 6 examples", "遍历 6 个样例的轮数"), ylabel=story.label("mean loss", "平均损失"),
           title=story.label(f"converged after {run['passes']} passes", f"{run['passes']} 轮后收敛"))
    ax.grid(alpha=0.3)
    return fig


def run(story: Story) -> dict[str, Any]:
    story.title("Lesson 3 · backpropagation by hand", "第 3 课 · 亲手做反向传播")
    story.say("Fit y = w·x + b to six noisy samples of y = 2x + 1: {data}. The loss of one example is "
              "L = (y − t)²/2, so the chain rule gives ∂L/∂y = y − t, [bold]∂L/∂w = (y − t)·x[/] and "
              "[bold]∂L/∂b = y − t[/]. Stochastic gradient descent takes one example at a time and steps against "
              "the gradient, with learning rate {lr}, from w = {w0}, b = {b0}:",
              "用 y = w·x + b 拟合 y = 2x + 1 的六个带噪声样本：{data}。单个样例的损失是 L = (y − t)²/2，"
              "由链式法则得 ∂L/∂y = y − t，[bold]∂L/∂w = (y − t)·x[/]，[bold]∂L/∂b = y − t[/]。"
              "随机梯度下降（SGD）每次取一个样例，沿梯度的反方向走一步，学习率 {lr}，从 w = {w0}、b = {b0} 出发：",
              data=" ".join(f"({x}, {t:g})" for x, t in DATA), lr=LR, w0=START[0], b0=START[1])
    story.code(gradients)
    story.code(sgd_step)
    result = train()
    rows = [(i, f"({u['x']}, {u['t']:g})", f"{u['y']:.6g}", f"{u['db']:.6g}", f"{u['dw'] + 0.0:.6g}", f"{u['w']:.6g}",
             f"{u['b']:.6g}") for i, u in enumerate(result["updates"], 1)]
    story.table([story.t("step", "步"), "(x, t)", "y", "y − t", "∂L/∂w", "w", "b"], rows,
                title=story.t("the first pass, update by update", "第一轮，逐次更新"))
    u1, u2 = result["updates"][:2]
    story.say("Check by hand. (0, 1): y = 0.6, y − t = −0.4, so b = 0.6 − 0.01·(−0.4) = [bold]{b1:.6g}[/] and w "
              "stays {w1:g} because x = 0. (1, 2.9): y = 0.5 + 0.604 = 1.104, y − t = −1.796, so "
              "w = 0.5 + 0.01796 = [bold]{w2:.6g}[/] and b = 0.604 + 0.01796 = [bold]{b2:.6g}[/].",
              "手算验证。(0, 1)：y = 0.6，y − t = −0.4，所以 b = 0.6 − 0.01·(−0.4) = [bold]{b1:.6g}[/]；"
              "x = 0，w 不变，仍是 {w1:g}。(1, 2.9)：y = 0.5 + 0.604 = 1.104，y − t = −1.796，"
              "所以 w = 0.5 + 0.01796 = [bold]{w2:.6g}[/]，b = 0.604 + 0.01796 = [bold]{b2:.6g}[/]。",
              b1=u1["b"], w1=u1["w"], w2=u2["w"], b2=u2["b"])
    ls = least_squares()
    marks = sorted({1, 10, 100, result["passes"]} & set(range(1, result["passes"] + 1)))
    story.table([story.t("pass", "轮"), story.t("mean loss", "平均损失")],
                [(n, f"{result['losses'][n]:.6f}") for n in marks])
    story.say("Converged after {n} passes at w = [bold]{w:.4f}[/], b = [bold]{b:.4f}[/], near the true (2, 1). "
              "The exact least-squares line is w = {lw:.4f}, b = {lb:.4f}: with a constant learning rate SGD "
              "stops close to it, not on it, because every step leans towards the example it just saw.",
              "{n} 轮后收敛：w = [bold]{w:.4f}[/]，b = [bold]{b:.4f}[/]，接近真实的 (2, 1)。精确的最小二乘解是 "
              "w = {lw:.4f}、b = {lb:.4f}：学习率不变时，SGD 停在它附近而不是正好在它上面，因为每一步都偏向刚看到的那个样例。",
              n=result["passes"], w=result["w"], b=result["b"], lw=ls[0], lb=ls[1])
    checks = autograd_check([START, (result["w"], result["b"])])
    worst = max(max(abs(c["dw"] - c["auto_dw"]), abs(c["db"] - c["auto_db"])) for c in checks)
    story.say("torch autograd computes the same gradients: on all {n} (point, example) pairs the largest difference "
              "from the hand-written ∂L/∂w and ∂L/∂b is {worst:.1e}. loss.backward() is this chain rule, applied "
              "automatically through every operation.",
              "torch 的自动求导算出的梯度完全一样：在全部 {n} 组（参数点，样例）上，与手写 ∂L/∂w、∂L/∂b 的最大差只有 "
              "{worst:.1e}。loss.backward() 做的就是这个链式法则，只是自动地穿过每一步运算。",
              n=len(checks), worst=worst)
    story.picture(draw(story, result, ls), "backprop_surface")
    story.next("`minigpt learn mnist`: the same loop, with autograd doing the chain rule, on handwritten digits.",
               "`minigpt learn mnist`：同样的训练循环，由自动求导做链式法则，用来识别手写数字。")
    return {**result, "least_squares": ls, "autograd": checks, "autograd_max_diff": worst}
