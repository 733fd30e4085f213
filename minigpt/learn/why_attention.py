"""Lesson 6, why-attention: associative recall, where a GPT with fewer parameters wins and the LSTM and GRU do not.

The task (tasks.Recall, the phone book): up to 24 entries "name=number", then a question "name?" about each entry,
in a random order; the answer is the number stored with that name, 1 to 47 tokens back. A GPT, an LSTM and a GRU
are sized towards 100K parameters (models.sizing.sized: the GPT's shapes come in coarser steps, so it lands at
68K) and trained the same way: 3,000 AdamW steps of 32 sequences. Measured (2 idle CPU
cores, seed 0, 121 s in all): the GPT (67,584 parameters) answers 100.0% at every gap; the LSTM (99,568) 33.2% and
the GRU (100,800) 31.5%, best on recent entries (43.4% and 38.2% at most 8 tokens back) and falling towards chance
(12.5%) with the gap (28.1% past 16). --quick (at most 12 entries, 400 steps, 2 torch threads, each
entry asked once): GPT 99.7%, LSTM 13.3%, GRU 17.6%.
On Tiny Shakespeare at 1M parameters `minigpt compare` has the LSTM ahead: next-character prediction is mostly
local, and there a recurrent state is enough. Here the answer is anywhere in the context, and attention reads it
directly: the question's query matches the entry's key.
"""
from __future__ import annotations

from typing import Any

import torch

from .story import Story, figure
from .tasks import Recall, compare_task, draw_accuracy

MODELS = ("gpt", "lstm", "gru")
PARAMS = 1e5


def example(task: Recall, pairs: int = 5, seed: int = 3) -> tuple[str, str]:
    x, y, _ = task.batch(1, torch.Generator().manual_seed(seed), pairs)
    entries = " ".join(task.text(t) for t in x[0, :pairs].tolist())
    questions = "  ".join(f"{task.text(q)} → {a}" for q, a in zip(x[0, pairs:].tolist(), y[0, pairs:].tolist()))
    return entries, questions


def run(story: Story) -> dict[str, Any]:
    from ..runs.compare import CompareConfig

    task = Recall(max_pairs=12) if story.quick else Recall()
    steps = 400 if story.quick else 3000
    story.title("Lesson 6 · why attention", "第 6 课 · 为什么需要注意力")
    entries, questions = example(task)
    story.say("A phone book: first up to {pairs} entries [bold]name=number[/] (each one token), then a question "
              "[bold]name?[/] about each entry, in a random order, to be answered with the number stored with that "
              "name. For example\n"
              "  {entries}\n  {questions}\nThe answer is not in the question: it has to be looked up, 1 to {gap} "
              "tokens back.",
              "一本电话簿：先是最多 {pairs} 条[bold]名字=号码[/]（每条一个词元），然后按随机顺序对每个名字各提问一次"
              "[bold]名字?[/]，要回答这个名字对应的号码。例如\n  {entries}\n  {questions}\n问题本身不含答案：必须回头去查，"
              "答案在 1 到 {gap} 个词元之前。",
              pairs=task.max_pairs, entries=entries, questions=questions, gap=2 * task.max_pairs - 1)
    story.say("Three models, each sized towards {params:,.0f} parameters (the GPT's shapes come in coarser steps, "
              "so it ends up smaller: the table has each count), trained the same way ({steps:,} steps of 32 "
              "sequences; the same command is `minigpt compare --task recall`):",
              "三个模型，参数量都按约 {params_zh} 来定（GPT 的形状只能粗略地调，最后参数更少，确切数字见下表），"
              "训练方式完全相同（{steps} 步，每步 32 条序列；对应的命令是 `minigpt compare --task recall`）：",
              params=PARAMS, params_zh=f"{PARAMS / 1e4:g} 万", steps=steps)
    config = CompareConfig(models=MODELS, params=PARAMS, batch_size=32, seed=story.seed, device=story.device)
    results = compare_task(task, config, steps=steps, per_length=30 if story.quick else 100, lang=story.lang)
    m = results["models"]
    story.table([story.t("model", "模型"), story.t("parameters", "参数"), story.t("accuracy", "准确率"),
                 story.t("gap ≤ 8", "间隔 ≤ 8"), story.t("gap > 16", "间隔 > 16"), story.t("time", "用时")],
                [(k, f"{e['params']:,}", f"{e['accuracy']:.1%}", f"{e['short']:.1%}", f"{e['long']:.1%}",
                  f"{e['seconds']:.0f} s") for k, e in m.items()])
    g, lstm, gru = m["gpt"], m["lstm"], m["gru"]
    story.say("The GPT answers {gpt:.1%} of the questions ({gpt_long:.1%} of those more than 16 tokens back), with "
              "fewer parameters. The LSTM gets {ls:.0%} of the recent entries (at most 8 tokens back) and {ll:.0%} "
              "of the old ones; the GRU {gs:.0%} and {gl:.0%}; chance is {chance:.1%}.",
              "GPT 答对了 {gpt:.1%} 的问题（间隔超过 16 个词元的也答对了 {gpt_long:.1%}），而且参数更少。"
              "LSTM 对最近的条目（间隔不超过 8）答对 {ls:.0%}，对久远的条目答对 {ll:.0%}；GRU 分别是 {gs:.0%} 和 "
              "{gl:.0%}；随机猜测的准确率是 {chance:.1%}。", gpt=g["accuracy"], gpt_long=g["long"], ls=lstm["short"],
              ll=lstm["long"], gs=gru["short"], gl=gru["long"], chance=task.chance)
    if story.quick:
        story.say("[dim](--quick trains {steps} steps: enough for the GPT, too few for the recurrent nets to learn "
                  "even the recent entries; the full lesson shows them recalling those and forgetting the rest.)[/]",
                  "[dim]（--quick 只训练 {steps} 步：对 GPT 已经够了，循环网络却连最近的条目都还没学会；"
                  "完整版课程里可以看到它们记住最近的、忘掉久远的。）[/]", steps=steps)
    story.say("A recurrent network has to squeeze every entry into one fixed-size state as the entries stream past; "
              "attention keeps them all and lets the question look them up: its query matches the entry's key, "
              "however far back. On Tiny Shakespeare `minigpt compare` has the LSTM ahead of the GPT at 1M "
              "parameters, and that is true too: predicting the next letter is mostly local. Attention wins where "
              "the answer can be anywhere in the context.",
              "循环网络必须在条目依次流过时，把它们全部压进一个大小固定的状态里；注意力则把所有条目都留着，"
              "让问题直接去查：问题的 query 与条目的 key 相匹配，不管隔得多远。在 Tiny Shakespeare 上，"
              "`minigpt compare` 在 1M 参数时 LSTM 领先 GPT，这同样是事实：预测下一个字母主要靠附近的几个字。"
              "当答案可能出现在上下文的任何位置时，注意力才显出优势。")
    story.picture(draw_accuracy(results, title=story.label("associative recall: accuracy against the gap",
                                                           "关联回忆：准确率与间隔"),
                                xlabel=story.label("gap (tokens from entry to question)", "间隔（条目到问题的词元数）"),
                                ylabel=story.label("accuracy", "准确率"), fig=figure(story, 7, 4.2),
                                chance=story.label("chance", "随机猜测")),
                  "why_attention_recall")
    story.next("`minigpt compare --task recall --models rnn,lstm,gru,cnn,gpt` compares more families (with a time "
               "budget); `minigpt learn chinese` trains a GPT on Tang poems and shows what it attends to.",
               "`minigpt compare --task recall --models rnn,lstm,gru,cnn,gpt` 可以比较更多模型（按时间预算）；"
               "`minigpt learn chinese` 在唐诗上训练一个 GPT，并展示它关注了什么。")
    return results
