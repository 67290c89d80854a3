"""`orpo bench`: the runner launches real worker processes on the micro profile; the FLOPs formula
and the token-length control are checked by hand."""

import importlib.util
import json
import math

import pytest

from orpo.cli.main import main
from orpo.lab.bench.flops import trl_flops, useful_flops
from orpo.lab.bench.profiles import PROFILES, TokenBudget, WordSource


def _bench_json(capsys, *flags: str) -> dict:
    code = main(
        ["bench", "--profile", "micro", "--dtype", "fp32", "--steps", "2", "--json", "--repeats", "1", *flags]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.mark.slow
def test_runner_measures_our_worker_on_micro(capsys):
    results = _bench_json(capsys, "--impl", "orpo")
    (run,) = results["runs"]
    assert run["impl"] == "orpo" and "error" not in run
    assert run["pairs"] == 2 * PROFILES["micro"].pairs_per_step  # the timed steps only
    assert run["pairs_per_s"] > 0 and run["tokens_per_s"] > run["pairs_per_s"]
    assert run["peak_rss_mb"] >= run["rss_before_train_mb"] > 0
    assert len(run["losses"]) == 3 and all(math.isfinite(x) for x in run["losses"])
    assert 0 < run["peak_fraction"] < 1
    assert results["matmul_peak_flops"]["fp32"] > 0
    assert results["comparisons"] == []  # no TRL run to compare with


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl not installed (orpo[bench])")
def test_trl_and_ours_see_the_same_pairs_and_reach_the_same_loss(capsys):
    """Same init (seeded build in each process), same rows, same sampler seed, same lr schedule:
    after 3 steps at lr 1e-3 the two losses agree to 1e-3, step by step."""
    results = _bench_json(capsys, "--impl", "trl,orpo", "--learning-rate", "1e-3", "--repeats", "2")
    runs = results["runs"]
    assert [(r["impl"], r["repeat"]) for r in runs] == [
        ("trl", 0),
        ("orpo", 0),
        ("trl", 1),
        ("orpo", 1),
    ]  # interleaved
    trl, ours = runs[:2]
    assert trl["pair_lengths"] == ours["pair_lengths"]  # same pairs, same order, same tokens
    assert ours["losses"] == pytest.approx(trl["losses"], abs=1e-3)
    (comparison,) = results["comparisons"]
    assert comparison["same_data"] and comparison["rounds"] == 2
    ratios = [
        runs[1]["pairs_per_s"] / runs[0]["pairs_per_s"],
        runs[3]["pairs_per_s"] / runs[2]["pairs_per_s"],
    ]
    assert comparison["throughput"] == pytest.approx(sum(ratios) / 2)  # median of two rounds
    assert comparison["throughput_range"] == pytest.approx([min(ratios), max(ratios)])
    assert comparison["flop_limit"] > 1  # TRL runs the prompt twice and the head at every position
    assert all(0 < r["executed_peak_fraction"] and r["gflops_per_s"] > 0 for r in runs)


def test_useful_flops_by_hand():
    """One pair P=2, C=1, R=1 on N=10 non-embedding params, H=2, V=3, 1 layer, d_attn=2:
    body 6*10*(2+1+1) = 240; head 6*2*3*(1+1+(2-1)) = 108 (36 per position, 72 without the prompt);
    attended (q, k) pairs A = 2*3/2 + 1*2 + 1*2/2 + 1*2 + 1*2/2 = 3+2+1+2+1 = 9, attn 12*1*2*9 = 216."""
    shape = {"non_embedding": 10, "hidden_size": 2, "vocab_size": 3, "num_layers": 1, "attention_width": 2}
    assert useful_flops([(2, 1, 1)], shape) == 240 + 108 + 216
    assert useful_flops([(2, 1, 1)], shape, nll_on_prompt=False) == 240 + 72 + 216
    assert useful_flops([(2, 1, 1)] * 3, shape) == 3 * 564


def test_trl_flops_by_hand():
    """Same pair and shape as above, TRL's way: two rows of P+C = 3 and P+R = 3 tokens, 6 tokens in all;
    body + head 6*(10 + 2*3)*6 = 576 (head at every position); attn 12*1*2*(3*4/2 + 3*4/2) = 288."""
    shape = {"non_embedding": 10, "hidden_size": 2, "vocab_size": 3, "num_layers": 1, "attention_width": 2}
    assert trl_flops([(2, 1, 1)], shape) == 576 + 288
    assert trl_flops([(2, 1, 1)], shape) / useful_flops([(2, 1, 1)], shape) == pytest.approx(864 / 564)


def test_text_lengths_are_exact_in_tokens():
    from orpo.models.tiny import build_tokenizer

    words = WordSource(seed=3)
    tokenizer = build_tokenizer([" ".join(words.take(64)) for _ in range(500)], vocab_size=400)
    budget = TokenBudget(tokenizer, words)
    for n in (1, 2, 7, 40, 113):
        for leading_space in (False, True):
            text = budget.text(n, leading_space)
            assert text.startswith(" ") == leading_space
            assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n


@pytest.mark.slow
def test_longpair_runs_and_both_attention_paths_give_the_same_loss(capsys):
    from orpo.lab.bench import longpair

    seg = longpair.main(["--tokens", "400", "--response", "40"])
    mask = longpair.main(["--tokens", "400", "--response", "40", "--attention", "mask"])
    assert seg["attention"] == "segments" and mask["attention"] == "mask"
    assert math.isfinite(seg["loss"][0]) and seg["peak_rss_gib"] > 0
    assert abs(seg["loss"][0] - mask["loss"][0]) < 1e-5
    assert capsys.readouterr().out.count("\n") == 2  # one JSON line per run


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl not installed (orpo[bench])")
def test_lora_runs_both_sides_on_the_same_pairs(capsys):
    """``--adapter lora``: both trainers train LoRA r=16 adapters on the same pairs; the losses start
    equal (zero-initialised B: the adapted model is the base) and stay finite."""
    results = _bench_json(capsys, "--impl", "trl,orpo", "--adapter", "lora", "--learning-rate", "1e-3")
    trl, ours = results["runs"]
    assert trl["adapter"] == ours["adapter"] == "lora" and results["options"]["adapter"] == "lora"
    assert trl["pair_lengths"] == ours["pair_lengths"]
    assert ours["losses"][0] == pytest.approx(trl["losses"][0], abs=1e-4)
    assert all(math.isfinite(x) for x in ours["losses"] + trl["losses"])


def test_real_model_profile_lengths_are_exact_in_its_tokenizer(smollm2):
    """The smollm2 profiles measure their text in SmolLM2's own 49k BPE: every length is exact."""
    from orpo.lab.bench.profiles import build_data

    tokenizer, rows, lengths = build_data(PROFILES["smollm2-chat"], n_rows=4)
    assert len(tokenizer) == 49_152
    for row, n in zip(rows, lengths):
        assert {k: len(tokenizer(row[k], add_special_tokens=False)["input_ids"]) for k in row} == n
