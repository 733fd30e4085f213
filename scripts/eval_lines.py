"""makemore's test loss for line data (such as names): every held-out line scored on its own.

`minigpt compare` and the trainer score random windows of the token stream, in which a line may begin before the
window does; makemore scores each name separately, from its start token to its end token. This script does the
latter for any checkpoint with a character (or BPE) tokenizer: each line is encoded as "\\n" + line + "\\n" (the
newline plays makemore's start and end token) and the loss is averaged over every predicted token, the final
newline included. The held-out lines are the validation split `minigpt prepare` made (a text file's last 10%).

    python scripts/eval_lines.py --checkpoint checkpoints/names-gpt --data names_shuffled.txt
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from minigpt.checkpoint import load_checkpoint
from minigpt.text.sources import open_source


@torch.no_grad()
def line_loss(model, tokenizer, lines: list[str], batch: int = 256) -> tuple[float, int]:
    """Mean loss in nats per predicted token over `lines`, each scored alone; and the number of tokens."""
    total, count = 0.0, 0
    for i in range(0, len(lines), batch):
        rows = [tokenizer.encode("\n" + line + "\n") for line in lines[i:i + batch]]
        width = max(map(len, rows)) - 1
        x = torch.zeros(len(rows), width, dtype=torch.long)
        y = torch.full((len(rows), width), -1, dtype=torch.long)
        for j, ids in enumerate(rows):
            x[j, :len(ids) - 1] = torch.tensor(ids[:-1])
            y[j, :len(ids) - 1] = torch.tensor(ids[1:])
        logits = model(x)  # causal: the padding after a line cannot change its scores
        total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum"))
        count += int((y != -1).sum())
    return total / count, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="run folder, RUN/best or a step_* folder")
    ap.add_argument("--data", required=True, help="the text file the model was trained on, one item per line")
    args = ap.parse_args()
    ckpt = load_checkpoint(args.checkpoint)
    held_out = [ln for doc in open_source(args.data).documents("val") for ln in doc.splitlines() if ln.strip()]
    loss, tokens = line_loss(ckpt.model.eval(), ckpt.tokenizer, held_out)
    block = ckpt.model.config.block_size
    if max(map(len, held_out)) + 1 > block:
        print(f"note: some lines are longer than the model's {block}-token block")
    print(f"{args.checkpoint}: {len(held_out):,} held-out lines, {tokens:,} predicted tokens, "
          f"loss {loss:.4f} nats/token")


if __name__ == "__main__":
    main()
