"""What the DPO stage's settings are worth: DPO variants from one SFT model, each scored on the report card's
held-out prompts, with paired 95% bootstrap intervals against the SFT model (a script, not a test).

Every variant trains for the same number of DPO steps (not seconds, so a busy machine changes nothing) on the
built-in preference pairs with the speedrun's DPO settings plus its own changes, into <out>/<variant>; then the
SFT model and every variant answer the same held-out prompts greedily, as the report card does
(`scripts/ablate_rl.py`'s scoring and table).

    python scripts/ablate_dpo.py --sft checkpoints/speedrun/sft --steps 750
    python scripts/ablate_dpo.py --sft checkpoints/speedrun/sft --variants rpo-1,rpo-3,beta-0.3

Variants (`VARIANTS`): the weight of the SFT term on the chosen reply (`rpo-A`: --rpo-alpha A; the default is
`finetune.RPO_ALPHA`), the DPO temperature (`beta-B`), the learning rate (`lr-X`), combinations, the
built-in pairs without the identity ones (`no-identity`), and another seed (`seed-2`, `rpo-10-seed-2`; the others
use 1337).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS: dict[str, dict] = {
    "rpo-0": {"rpo_alpha": 0.0},
    "rpo-1": {"rpo_alpha": 1.0},
    "rpo-3": {"rpo_alpha": 3.0},
    "rpo-10": {"rpo_alpha": 10.0},
    "beta-0.3": {"beta": 0.3},
    "rpo-1-beta-0.3": {"rpo_alpha": 1.0, "beta": 0.3},
    "rpo-3-beta-0.3": {"rpo_alpha": 3.0, "beta": 0.3},
    "lr-5e-5": {"lr": 5e-5, "min_lr": 5e-6},
    "lr-3e-4": {"lr": 3e-4, "min_lr": 3e-5},
    "lr-1e-3": {"lr": 1e-3, "min_lr": 1e-4},
    "no-identity": {"no_identity": True},
    "seed-2": {"seed": 2},
    "rpo-10-seed-2": {"rpo_alpha": 10.0, "seed": 2},
}


def train_variant(sft: str, out: Path, steps: int, change: dict) -> Path:
    from ablate_rl import jsonl_file
    from minigpt.checkpoint import load_checkpoint
    from minigpt.text import chat_pairs
    from minigpt.train import finetune

    if (out / "latest").is_file():
        return out
    change = dict(change)
    objective = {k: change.pop(k) for k in ("beta", "rpo_alpha") if k in change}
    data = None
    if change.pop("no_identity", False):  # the built-in pairs less the identity ones, as a file
        data = jsonl_file(out.parent / "pairs-no-identity.jsonl",
                          [p for p in chat_pairs.preference_records(finetune.facts_of(load_checkpoint(sft)))
                           if p["family"] != "identity"])
    seed = change.pop("seed", 1337)
    cfg = finetune.stage_train_config("dpo", max_iters=steps, eval_interval=10**9, seed=seed, **change)
    finetune.dpo(sft, data, train_config=cfg, out=out, **objective)
    return out


def main(argv: list[str] | None = None) -> int:
    from ablate_rl import ablate

    # 750 steps: about the speedrun's DPO share on an idle 2-core machine
    return ablate(argv, __doc__, "DPO", VARIANTS, train_variant, 750, "rpo-1,rpo-3,beta-0.3")


if __name__ == "__main__":
    sys.exit(main())
