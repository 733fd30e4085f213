"""Logits processors against hand-computed distributions, the full chain, seeded draws, config validation."""
from __future__ import annotations

import math

import pytest
import torch

from minigpt.common import MinigptError
from minigpt.config import add_dataclass_args
from minigpt.infer.sampling import SamplingConfig, apply_min_p, apply_repetition_penalty, apply_temperature, apply_top_k, apply_top_p, draw, grid_configs, make_generators, parse_grid, process_logits, sample_next

INF = float("inf")


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()


def probs_of(logits: torch.Tensor) -> list[float]:
    return logits.softmax(-1)[0].tolist()


def close(a: list[float], b: list[float]) -> None:
    assert a == pytest.approx(b, abs=1e-6), (a, b)


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)  # token 1 twice: penalised once
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert logits.tolist() == [[2.0, -1.0, 0.5, 3.0]], "pure: the input is untouched"
    assert apply_repetition_penalty(logits, torch.tensor([[0]]), 1.0) is logits


def test_temperature_hand_computed():
    # p = (0.5, 0.25, 0.25) at T=2 becomes p^(1/2) normalised: (0.7071, 0.5, 0.5) / 1.7071
    out = probs_of(apply_temperature(logits_of([0.5, 0.25, 0.25]), 2.0))
    z = math.sqrt(0.5) + 2 * 0.5
    close(out, [math.sqrt(0.5) / z, 0.5 / z, 0.5 / z])
    with pytest.raises(ValueError):
        apply_temperature(logits_of([0.5, 0.5]), 0.0)


def test_top_k_hand_computed():
    out = probs_of(apply_top_k(logits_of([0.1, 0.4, 0.3, 0.2]), 2))
    close(out, [0.0, 4 / 7, 3 / 7, 0.0])
    same = logits_of([0.1, 0.4, 0.3, 0.2])
    assert torch.equal(apply_top_k(same, 0), same) and torch.equal(apply_top_k(same, 4), same)


@pytest.mark.parametrize("p, expected", [
    (0.5, [1.0, 0, 0, 0]),            # the top token alone holds 0.5
    (0.7, [2 / 3, 1 / 3, 0, 0]),      # 0.5 + 0.25 = 0.75 >= 0.7
    (0.75, [2 / 3, 1 / 3, 0, 0]),     # exactly reached: no third token
    (0.8, [0.5 / 0.875, 0.25 / 0.875, 0.125 / 0.875, 0]),
    (1.0, [0.5, 0.25, 0.125, 0.125]),
])
def test_top_p_hand_computed(p, expected):
    # the tokens in shuffled order, so the processor must sort and scatter back
    out = probs_of(apply_top_p(logits_of([0.125, 0.5, 0.125, 0.25]), p))
    close(out, [expected[2], expected[0], expected[3] if p < 1 else expected[2], expected[1]])


def test_min_p_hand_computed():
    # floor = 0.3 * 0.5 = 0.15: keeps 0.5 and 0.25 (0.1 and 0.15 - eps go)
    out = probs_of(apply_min_p(logits_of([0.5, 0.25, 0.14, 0.11]), 0.3))
    close(out, [2 / 3, 1 / 3, 0, 0])
    same = logits_of([0.5, 0.5])
    assert torch.equal(apply_min_p(same, 0.0), same)


def test_processors_work_row_by_row():
    logits = torch.cat([logits_of([0.5, 0.25, 0.125, 0.125]), logits_of([0.125, 0.125, 0.25, 0.5])])
    out = apply_top_p(logits, 0.7).softmax(-1).tolist()
    close(out[0], [2 / 3, 1 / 3, 0, 0])
    close(out[1], [0, 0, 1 / 3, 2 / 3])


def test_chain_order_penalty_temperature_topk_topp_minp():
    """Worked through by hand: logits ln(.4 .3 .2 .1), token 0 seen with penalty 2, T=1, top-k 3, top-p 0.8."""
    logits = logits_of([0.4, 0.3, 0.2, 0.1])
    cfg = SamplingConfig(temperature=1.0, top_k=3, top_p=0.8, min_p=0.0, repetition_penalty=2.0)
    # ln .4 < 0 so the penalty multiplies it: ln .4 * 2 = ln .16 -> (.16 .3 .2 .1)
    # top-k 3 drops .1 -> (.16 .3 .2)/.66; top-p 0.8: .3/.66=.4545, +.2/.66=.7576 < .8, + .16/.66 -> all 3 stay
    out = probs_of(process_logits(logits, cfg, recent=torch.tensor([[0]])))
    close(out, [0.16 / 0.66, 0.3 / 0.66, 0.2 / 0.66, 0.0])
    # then min-p 0.6: floor .6 * .4545 = .2727 keeps .4545 and .3030 (.2424 goes) -> (.3 .2)/.5
    out = probs_of(process_logits(logits, cfg.with_overrides(min_p=0.6), recent=torch.tensor([[0]])))
    close(out, [0, 0.6, 0.4, 0])
    # min-p 0.7: floor .3182 keeps token 1 alone
    out = probs_of(process_logits(logits, cfg.with_overrides(min_p=0.7), recent=torch.tensor([[0]])))
    close(out, [0, 1, 0, 0])


def test_sample_next_draws_from_the_processed_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 40) * 2
    cfg = SamplingConfig(temperature=0.7, top_k=10, top_p=0.9, min_p=0.05)
    expected = process_logits(logits, cfg).softmax(-1)[0]
    n = 20000
    ids, logprobs = sample_next(logits.expand(n, -1), cfg)  # one shared global generator for 20000 rows
    freq = torch.bincount(ids, minlength=40).float() / n
    assert (freq[expected == 0] == 0).all(), "a removed token was drawn"
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)
    # the reported log-prob is the model's own (raw logits), not the processed one
    torch.testing.assert_close(logprobs, logits.log_softmax(-1)[0, ids])


def test_greedy_is_argmax_after_the_penalty():
    logits = torch.tensor([[3.0, 2.9, -1.0]])
    ids, _ = sample_next(logits, SamplingConfig(temperature=0))
    assert ids.tolist() == [0]
    ids, _ = sample_next(logits, SamplingConfig(temperature=0, repetition_penalty=1.5), recent=torch.tensor([[0]]))
    assert ids.tolist() == [1]


@pytest.mark.parametrize("seeded", [False, True])
def test_logits_that_are_not_finite_are_one_line_naming_the_likely_cause(seeded):
    logits = torch.tensor([[0.0, float("nan"), 1.0]])
    gens = make_generators(1, 1, "cpu") if seeded else None
    with pytest.raises(MinigptError, match="not finite .*diverged"):
        sample_next(logits, SamplingConfig(temperature=1.0, top_k=0, top_p=1.0), gens)


def test_seeded_draws_reproduce_and_rows_are_independent():
    logits = torch.zeros(1, 1000)
    cfg = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)

    def run(seed, n):
        gens = make_generators(seed, n, "cpu")
        return [sample_next(logits.expand(n, -1), cfg, gens)[0].tolist() for _ in range(20)]

    a, b, c = run(7, 1), run(7, 1), run(8, 1)
    assert a == b and a != c
    batch = run(7, 3)  # row i of a batch draws exactly what seed 7+i draws alone
    for i in range(3):
        assert [step[i] for step in batch] == [step[0] for step in run(7 + i, 1)]
    with pytest.raises(ValueError):
        draw(torch.ones(2, 3) / 3, make_generators(0, 1, "cpu"))


def test_config_validation_names_the_flag():
    for bad, flag in [(dict(temperature=-1), "--temperature"), (dict(top_k=-1), "--top-k"),
                      (dict(top_p=0), "--top-p"), (dict(top_p=1.5), "--top-p"), (dict(min_p=2), "--min-p"),
                      (dict(repetition_penalty=0), "--repetition-penalty"), (dict(max_new_tokens=0), "--max-new-tokens"),
                      (dict(seed=-3), "--seed"), (dict(stop=("",)), "--stop")]:
        with pytest.raises(MinigptError, match=flag):
            SamplingConfig(**bad)
    with pytest.raises(MinigptError, match="unknown sampling option"):
        SamplingConfig().with_overrides(temprature=1)
    assert SamplingConfig(stop="###").stop == ("###",)


def test_every_field_but_stop_is_a_flag_with_help():
    import argparse

    p = argparse.ArgumentParser()
    add_dataclass_args(p, SamplingConfig)
    args = p.parse_args(["--temperature", "0", "--top-k", "5", "--seed", "none", "--max-new-tokens", "9"])
    assert vars(args) == {"temperature": 0.0, "top_k": 5, "seed": None, "max_new_tokens": 9}
    assert "--stop" not in p.format_help() and "nucleus" in p.format_help()


def test_grid_parsing_and_combinations():
    grid = parse_grid(["temperature=0.2,0.8", "top-p=0.9,1"])
    assert grid == {"temperature": [0.2, 0.8], "top_p": [0.9, 1.0]}
    combos = grid_configs(SamplingConfig(seed=1), grid)
    assert [v for v, _ in combos] == [{"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2, "top_p": 1.0},
                                      {"temperature": 0.8, "top_p": 0.9}, {"temperature": 0.8, "top_p": 1.0}]
    assert all(c.seed == 1 for _, c in combos)
    for bad in (["temperature"], ["nope=1"], ["top_k=a"]):
        with pytest.raises(MinigptError):
            parse_grid(bad)
    with pytest.raises(MinigptError, match="--top-p"):
        grid_configs(SamplingConfig(), parse_grid(["top_p=2"]))
