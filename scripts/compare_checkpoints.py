"""Chat checkpoints side by side: each answers the report card's held-out prompts greedily, scored, with paired
95% bootstrap intervals against the first (a script, not a test; `scripts/ablate_rl.py`'s scoring and table).

    python scripts/compare_checkpoints.py checkpoints/speedrun/sft/best checkpoints/speedrun/sft/latest
    python scripts/compare_checkpoints.py checkpoints/speedrun/sft checkpoints/speedrun/rl --out /tmp/scores

A checkpoint is a step folder, a run folder (its latest step) or a run's `latest` / `best` pointer. With --out
the score files are kept there and reused on the next call (delete one to rescore its checkpoint).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablate_rl import compare  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="chat checkpoints; the first is the baseline")
    p.add_argument("--out", help="folder to keep the score files in (default: none kept)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(a.out or scratch)
        out.mkdir(parents=True, exist_ok=True)
        runs = {re.sub(r"[^\w.-]+", "_", c.strip("/")): Path(c) for c in a.checkpoints}
        compare(runs, out, "checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
