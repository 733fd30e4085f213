"""What the SFT stage's settings are worth: SFT variants from one pretrained model, each scored on the report
card's held-out prompts, with paired 95% bootstrap intervals against the first variant (a script, not a test).

Every variant trains for the same number of SFT steps (not seconds, so a busy machine changes nothing) on the
built-in conversations with the SFT defaults plus its own changes, into <out>/<variant>; then every variant
answers the same held-out prompts greedily (`scripts/ablate_rl.py`'s scoring and table).

    python scripts/ablate_sft.py --base checkpoints/speedrun/pretrain/best --steps 755
    python scripts/ablate_sft.py --base checkpoints/speedrun/pretrain/best --variants default,lr-5e-4,neftune-5

Variants (`VARIANTS`): the peak learning rate (`lr-X`, the floor a tenth of it; `default` is
`finetune.STAGE_DEFAULTS["sft"]`), NEFTune (noise of norm alpha / sqrt(T * C) added to the token embeddings
while training, Jain et al. 2023), dropout 0.1 in every block, and the defaults with another seed (`seed-2`;
the others use 1337).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS: dict[str, dict] = {
    "default": {},
    **{f"lr-{lr}": {"lr": float(lr), "min_lr": float(lr) / 10}
       for lr in ("2.5e-4", "5e-4", "1e-3", "1.5e-3", "2e-3", "3e-3", "4e-3")},
    "neftune-5": {"neftune": 5.0},
    "dropout-0.1": {"dropout": 0.1},
    "seed-2": {"seed": 2},
}


def neftune(model, alpha: float) -> None:
    """Uniform noise in [-1, 1] scaled by alpha / sqrt(T * C) on the token embeddings, in training only."""
    def noisy(module, inputs, out):
        if module.training:
            return out + out.new_empty(out.shape).uniform_(-1, 1) * (alpha / (out.size(1) * out.size(2)) ** 0.5)
    model.transformer.wte.register_forward_hook(noisy)


def dropout(model, p: float) -> None:
    for block in model.transformer.h:
        block.attn.dropout = block.mlp.dropout = p


def train_variant(base: str, out: Path, steps: int, change: dict) -> Path:
    from minigpt.train import finetune

    if (out / "latest").is_file():
        return out
    change = dict(change)
    seed = change.pop("seed", 1337)
    tweaks = [(fn, change.pop(name)) for name, fn in (("neftune", neftune), ("dropout", dropout)) if name in change]
    parent = finetune._parent

    def tweaked(*args, **kwargs):  # the parent model as loaded, changed before training starts
        ckpt, folder, info = parent(*args, **kwargs)
        for fn, value in tweaks:
            fn(ckpt.model, value)
        return ckpt, folder, info

    finetune._parent = tweaked
    try:
        cfg = finetune.stage_train_config("sft", max_iters=steps, eval_interval=10**9, seed=seed, **change)
        finetune.sft(base, None, train_config=cfg, out=out)
    finally:
        finetune._parent = parent
    return out


def main(argv: list[str] | None = None) -> int:
    from ablate_rl import ablate

    # 755 steps: about the speedrun's SFT share on an idle 2-core machine
    return ablate(argv, __doc__, "SFT", VARIANTS, train_variant, 755, "lr-5e-4,lr-1e-3,default,lr-4e-3",
                  start="base", baseline=None)


if __name__ == "__main__":
    sys.exit(main())
