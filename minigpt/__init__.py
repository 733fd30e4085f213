"""minigpt: from raw text to a GPT you can chat with, on a laptop, showing every stage."""
import os as _os

# OpenMP threads that spin while waiting make a 2-core laptop crawl as soon as anything else runs: measured on
# the nanoGPT CPU recipe with one other busy process, 1819 ms/iter by default vs 69 ms with PASSIVE. It must be
# set before torch loads its OpenMP runtime, so it lives here; an explicit setting by the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
