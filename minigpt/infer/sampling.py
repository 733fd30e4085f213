"""Sampling: the knobs (`SamplingConfig`) and the logits processors, each a small pure function.

Order, applied to the (B, V) next-token logits of every step (the order of llama.cpp's default chain and of
Hugging Face's `generate`, minus the exotic ones):

    [UTF-8 guard] -> repetition penalty -> temperature -> top-k -> top-p -> min-p -> seeded draw (or argmax when
    temperature is 0)

- UTF-8 guard (`valid_utf8`, on by default; infer/utf8.py): tokens that would break a character are removed
  first, so a byte-level model never prints half a character. The engine keeps each row's state.
- repetition penalty (Keskar et al., "CTRL", 2019, eq. 2): a token seen among the last `repetition_window`
  tokens has its logit divided by the penalty when positive and multiplied by it when negative, so it always
  becomes less likely (1.0 = off, 1.1-1.3 typical).
- temperature: logits / T. T < 1 sharpens, T > 1 flattens; T = 0 means greedy (argmax), no randomness at all.
- top-k (Fan et al. 2018): keep the k highest logits (ties at the k-th value are kept too).
- top-p, nucleus (Holtzman et al., "The Curious Case of Neural Text Degeneration", 2020): keep the smallest
  set of most probable tokens whose probability mass reaches p.
- min-p (Nguyen et al. 2024): keep tokens whose probability is at least min_p x the top token's.

Every processor returns new logits with removed tokens at -inf and never removes the most probable token the
guard left, so a draw is always possible. `sample_next` runs the chain for one decoding step; with top-k on it
works on the k survivors only (topk gives them sorted), which is the same distribution and avoids sorting the
whole vocabulary each step (on one CPU thread, V=4096: sort ~52 us, topk(50) ~11 us; a whole decode step of the tiny
GPT is ~1.7 ms).

Seeding: one `torch.Generator` per sample (sample i of a batch is seeded with seed + i), so n samples drawn
together from one shared prefill equal n separate runs seeded seed, seed+1, ... token for token.
Log-probabilities reported with each token are the model's own (log_softmax of the raw logits, before the
penalty and temperature): what a reward model, RL or an inspector wants, and comparable across settings.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch

from ..common import MinigptError
from ..config import check, option

SEEDS = 2**64  # torch.Generator.manual_seed takes 0 .. 2**64 - 1
MAX_NEW_TOKENS = 1_000_000  # the engine holds every sample's whole text: 8 bytes a token


@dataclass
class SamplingConfig:
    temperature: float = option(0.8, "softmax temperature: <1 sharper, >1 flatter; 0 = greedy (always the "
                                     "most likely token)")
    top_k: int = option(50, "sample only among the k most likely tokens; 0 = off")
    top_p: float = option(0.95, "nucleus sampling: the smallest set of tokens holding this much probability; "
                                "1 = off")
    min_p: float = option(0.0, "drop tokens less likely than min_p x the top token's probability; 0 = off")
    repetition_penalty: float = option(1.0, "CTRL-style penalty on recently seen tokens (positive logits / p, "
                                            "negative x p); 1 = off, 1.1-1.3 typical")
    repetition_window: int = option(64, "how many recent tokens (prompt included) the repetition penalty sees")
    valid_utf8: bool = option(True, "draw only tokens that keep the text valid UTF-8, so a reply never shows a "
                                    "broken character (infer/utf8.py); off = the model's raw choices")
    max_new_tokens: int = option(256, "stop after this many new tokens")
    seed: int | None = option(None, "random seed for reproducible samples; none = a fresh random seed")
    stop: tuple[str, ...] = option((), "stop strings: generation ends before the first occurrence of any",
                                   cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        check(0 <= self.temperature < float("inf"), "temperature", f"must be a number >= 0 (0 = greedy), got "
              f"{self.temperature}")
        check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", f"must be an integer >= 0 (0 = off), "
              f"got {self.top_k!r}")
        check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1] (1 = off), got {self.top_p}")
        check(0 <= self.min_p <= 1, "min_p", f"must be in [0, 1] (0 = off), got {self.min_p}")
        check(self.repetition_penalty > 0, "repetition_penalty", f"must be positive (1 = off), got "
              f"{self.repetition_penalty}")
        check(isinstance(self.repetition_window, int) and self.repetition_window >= 0, "repetition_window",
              f"must be an integer >= 0, got {self.repetition_window!r}")
        check(isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= MAX_NEW_TOKENS, "max_new_tokens",
              f"must be an integer from 1 to {MAX_NEW_TOKENS:,}, got {self.max_new_tokens!r}")
        check(isinstance(self.valid_utf8, bool), "valid_utf8", f"must be true or false, got {self.valid_utf8!r}")
        check(self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < SEEDS), "seed",
              f"must be an integer from 0 to 2**64 - 1 or none, got {self.seed!r}")
        check(all(isinstance(s, str) and s for s in self.stop), "stop", "stop strings must be non-empty text")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_overrides(self, **overrides: Any) -> "SamplingConfig":
        """A validated copy with some fields changed; an unknown name is a one-line error."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise MinigptError(f"unknown sampling option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides) if overrides else self


# ---------------------------------------------------------------------------------------------- processors
# Each takes (B, V) logits (any float dtype) and returns new (B, V) float logits; removed tokens are -inf.


def apply_repetition_penalty(logits: torch.Tensor, recent: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL: for each token id in `recent` (B, W), logit / penalty if positive, logit * penalty if not.

    A token counts once however often it repeats in the window (CTRL's and llama.cpp's rule)."""
    if penalty == 1.0 or recent.numel() == 0:
        return logits
    out = logits.clone()
    seen = out.gather(1, recent)  # (B, W): duplicates read (and later write) the same value
    out.scatter_(1, recent, torch.where(seen > 0, seen / penalty, seen * penalty))
    return out


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / T (T > 0; T = 0 is greedy and handled by the caller: there is nothing to scale), each row shifted
    by its largest logit first (softmax is unchanged), so that a tiny T gives -inf for the rest, not inf - inf."""
    if temperature <= 0:
        raise ValueError("temperature 0 means greedy: take the argmax instead of scaling")
    if temperature == 1.0:
        return logits
    return (logits - logits.amax(dim=-1, keepdim=True)) / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits of each row (and any tied with the k-th); 0 or k >= V keeps all."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most probable tokens whose probability sums to at least p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.float().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above this one
    remove_sorted = mass_before >= p  # the top token has mass_before 0 < p, so it always stays
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens with probability >= min_p x (the top token's probability)."""
    if min_p <= 0.0:
        return logits
    probs = logits.float().softmax(dim=-1)
    floor = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < floor, float("-inf"))


def process_logits(logits: torch.Tensor, config: SamplingConfig, recent: torch.Tensor | None = None) -> torch.Tensor:
    """The whole chain on (B, V) logits: what `sample_next` draws from when temperature > 0."""
    x = logits.float()
    if recent is not None:
        x = apply_repetition_penalty(x, recent, config.repetition_penalty)
    if config.greedy:
        return x
    x = apply_temperature(x, config.temperature)
    x = apply_top_k(x, config.top_k)
    x = apply_top_p(x, config.top_p)
    return apply_min_p(x, config.min_p)


# ---------------------------------------------------------------------------------------------- drawing


def make_generators(seed: int, n: int, device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample: sample i draws from `nth_seed(seed, i)`."""
    return [torch.Generator(device=device).manual_seed(nth_seed(seed, i)) for i in range(n)]


def nth_seed(seed: int, i: int) -> int:
    """The seed of the i-th sample (or reply) of a run seeded `seed`: seed + i, wrapped into torch's range."""
    return (seed + i) % SEEDS


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """One index per row of (B, K) probabilities; row i uses generators[i] (its own stream of randomness)."""
    if generators is None:
        return torch.multinomial(probs, 1)[:, 0]
    if len(generators) != probs.size(0):
        raise ValueError(f"{len(generators)} generators for {probs.size(0)} rows")
    if len(generators) == 1:
        return torch.multinomial(probs, 1, generator=generators[0])[:, 0]
    return torch.cat([torch.multinomial(probs[i:i + 1], 1, generator=g)[:, 0] for i, g in enumerate(generators)])


def _draw_checked(probs: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """`draw`, with torch's error for probabilities that are not finite turned into what it means here."""
    try:
        return draw(probs, generators)
    except RuntimeError:
        if torch.isfinite(probs).all() and not (probs < 0).any():
            raise
        raise MinigptError("the model's next-token probabilities are not finite (NaN or inf logits): its weights "
                           "are probably broken (a run that diverged?); try an earlier checkpoint step") from None


def sample_next(logits: torch.Tensor, config: SamplingConfig, generators: Sequence[torch.Generator] | None = None,
                recent: torch.Tensor | None = None, blocked: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step: (B, V) logits -> (token ids (B,), the model's log-probabilities of them (B,)).

    `recent`: (B, W) ids the repetition penalty looks at. `blocked`: (B, V), True for tokens that may not be
    drawn at all (the UTF-8 guard's), removed before the chain. Equivalent to drawing from
    softmax(process_logits(...)); with top-k on, top-p and min-p run on the k survivors only."""
    raw = logits.float()
    x = raw if blocked is None else raw.masked_fill(blocked, float("-inf"))
    if recent is not None:
        x = apply_repetition_penalty(x, recent, config.repetition_penalty)
    if config.greedy:
        ids = x.argmax(dim=-1)
    else:
        x = apply_temperature(x, config.temperature)
        index = None
        if 0 < config.top_k < x.size(-1):
            x, index = x.topk(config.top_k, dim=-1)  # (B, k), sorted; index maps back to vocabulary ids
        x = apply_min_p(apply_top_p(x, config.top_p), config.min_p)
        ids = _draw_checked(x.softmax(dim=-1), generators)
        if index is not None:
            ids = index.gather(1, ids[:, None])[:, 0]
    logprobs = raw.gather(1, ids[:, None])[:, 0] - raw.logsumexp(dim=-1)
    return ids, logprobs


# ---------------------------------------------------------------------------------------------- grids


def parse_grid(specs: Iterable[str]) -> dict[str, list[Any]]:
    """['temperature=0.2,0.8', 'top_p=0.9,1'] -> {'temperature': [0.2, 0.8], 'top_p': [0.9, 1.0]}, each value
    parsed (and later validated) as the SamplingConfig field's type."""
    fields = {f.name: f for f in dataclasses.fields(SamplingConfig) if f.metadata.get("cli") is not False}
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, eq, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not values.strip():
            raise MinigptError(f"--grid {spec!r}: write NAME=V1,V2,... (e.g. temperature=0.2,0.8,1.2)")
        if name not in fields:
            raise MinigptError(f"--grid {spec!r}: {name!r} is not a sampling option; use one of "
                               f"{', '.join(fields)}")
        grid[name] = [parse_value(name, v.strip()) for v in values.split(",")]
    return grid


def parse_value(name: str, text: str) -> Any:
    """A SamplingConfig field's value from text (used by --grid and chat's /set): 'none' -> None for seed."""
    if name == "seed":
        if text.lower() in ("none", "random", ""):
            return None
        kind = int
    else:
        default = next(f.default for f in dataclasses.fields(SamplingConfig) if f.name == name)
        kind = type(default)
    if kind is bool:
        switch = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False,
                  "no": False}
        if text.lower() not in switch:
            raise MinigptError(f"{name}: {text!r} is not on or off")
        return switch[text.lower()]
    try:
        return kind(text)
    except ValueError:
        raise MinigptError(f"{name}: {text!r} is not a valid {kind.__name__}") from None


def grid_configs(base: SamplingConfig, grid: dict[str, list[Any]]) -> list[tuple[dict[str, Any], SamplingConfig]]:
    """Every combination of the grid's values (first option varies slowest), each a validated config."""
    names = list(grid)
    return [(dict(zip(names, combo)), base.with_overrides(**dict(zip(names, combo))))
            for combo in itertools.product(*(grid[n] for n in names))]
