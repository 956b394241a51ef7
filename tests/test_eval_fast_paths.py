"""The TOFU evaluation's fast paths give the plain paths' values: answers scored from their
question's cached prompt (with and without an adapter's edit) equal scoring each pair whole;
greedy decoding through the decoder with finished rows leaving the batch gives transformers'
``generate`` tokens; and grun's Evaluator gives an OpenUnlearning-style loop's per-sample
values (benchmarks/ou_style_eval.py, the loop benchmarks/eval_speed.py times it against)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from test_adapters import GRUN, LORA, fresh, perturb

from grun_cli.data.synthetic import generate
from grun_cli.eval.tofu import Evaluator
from grun_cli.models.template import PromptTemplate
from grun_cli.scoring.generation import _greedy, greedy_answers
from grun_cli.scoring.likelihood import (
    answer_avg_loss,
    decoder_and_head,
    left_pad,
    shared_prompt_avg_loss,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ou_style_eval import ou_style_eval  # noqa: E402

from conftest import new_adapter

DATA = generate(num_authors=30)


def _pairs() -> list[tuple[str, str]]:
    """Several answers per question, of different lengths, questions of different lengths."""
    rows = DATA["forget05_perturbed"][:6] + DATA["world_facts_perturbed"][:3]
    pairs = [(r["question"], a) for r in rows for a in [r["answer"], *r["perturbed_answer"][:3]]]
    return [*pairs, (rows[0]["question"], rows[1]["answer"] + " " + rows[2]["answer"])]


@pytest.mark.parametrize("adapter_cfg", [None, GRUN, LORA], ids=["plain", "grun", "lora"])
@pytest.mark.parametrize("batch_size", [1, 5, 32])
def test_shared_prompt_scores_equal_whole_pairs(tiny, adapter_cfg, batch_size: int) -> None:
    model = fresh(tiny)
    adapter = None
    if adapter_cfg is not None:
        torch.manual_seed(0)
        adapter = new_adapter(model, adapter_cfg)
        perturb(adapter)  # an edit that changes the outputs
        model = adapter.model
    pairs, t = _pairs(), PromptTemplate()
    whole = answer_avg_loss(model, tiny.tokenizer, t, pairs, max_length=256, batch_size=4, adapter=adapter)
    shared = shared_prompt_avg_loss(model, tiny.tokenizer, t, pairs, max_length=256, batch_size=batch_size,
                                    adapter=adapter)
    assert shared == pytest.approx(whole, abs=2e-5)
    if adapter_cfg is GRUN:  # the edit is really applied: without it the values differ
        plain = shared_prompt_avg_loss(model, tiny.tokenizer, t, pairs, max_length=256, batch_size=batch_size)
        assert max(abs(a - b) for a, b in zip(plain, shared, strict=True)) > 1e-3
    # an answer cut at max_length is scored on its kept tokens, as the whole-pair path does
    short = shared_prompt_avg_loss(model, tiny.tokenizer, t, pairs[-1:], max_length=40, adapter=adapter)
    assert short == pytest.approx(answer_avg_loss(model, tiny.tokenizer, t, pairs[-1:], max_length=40,
                                                  adapter=adapter), abs=2e-5)


@pytest.mark.parametrize("with_grun", [False, True], ids=["plain", "grun"])
def test_greedy_decoding_equals_generate(tiny, with_grun: bool) -> None:
    model, adapter = fresh(tiny), None
    if with_grun:
        torch.manual_seed(0)
        adapter = new_adapter(model, GRUN)
        perturb(adapter)
        model = adapter.model
    tok, t = tiny.tokenizer, PromptTemplate()
    prompts = [t.prompt_ids(tok, r["question"]) for r in DATA["forget05_perturbed"][:7]]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    padded_ids, padded_mask, positions = left_pad(prompts, tok.pad_token_id)
    assert torch.equal(padded_ids, ids) and torch.equal(padded_mask, mask)
    assert positions[0].tolist() == [0] * (width - len(prompts[0])) + list(range(len(prompts[0])))

    def hf(eos: int) -> torch.Tensor:
        from grun_cli.scoring.likelihood import edit_context

        with torch.no_grad(), edit_context(adapter, [width - 1] * len(prompts), once=True):
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=eos)
        return gen[:, width:]

    # a random model never says eos: stand in the token it emits most as "eos", so rows end
    # at different steps and leave the batch
    free = hf(eos=-1)
    stop = Counter(free[:, 1:].flatten().tolist()).most_common(1)[0][0]
    want = hf(eos=stop)
    with torch.no_grad():
        got = _greedy(*decoder_and_head(model), ids, mask, positions, adapter, 16, stop, tok.pad_token_id)
    for w, g in zip(want.tolist(), got.tolist(), strict=True):
        cut = lambda row: row[: row.index(stop) + 1] if stop in row else row  # noqa: E731
        assert cut(g) == cut(w)
    ended = [stop in row for row in got.tolist()]
    assert any(ended) and not all(r[-1] == stop for r in got.tolist())  # rows ended at different steps


def test_evaluator_matches_openunlearning_style_loop(tiny) -> None:
    """Per-sample values: grun's Evaluator (shared prompts, sorted batches, greedy with rows
    leaving) against one pass per metric in data order with labels passed to the model."""
    model, tok, t = fresh(tiny), tiny.tokenizer, PromptTemplate()
    sizes = {"forget05_perturbed": 5, "retain_perturbed": 4, "real_authors_perturbed": 3, "world_facts_perturbed": 3}
    sets = {key: [{**r, "index": i} for i, r in enumerate(DATA[split][:n])]
            for key, (split, n) in zip(("forget", "retain", "ra", "wf"), sizes.items(), strict=True)}
    cfg = {"batch_size": 7, "gen_batch_size": 4, "max_new_tokens": 12, "truth_ratio": "tofu"}
    logs = Evaluator(model, tok, t, cfg, 256).run(sets)
    ref = ou_style_eval(model, tok, t, sets, max_length=256, batch_size=32, max_new_tokens=12)
    for key, rows in sets.items():
        for i, r in enumerate(rows):
            idx = str(r["index"])
            assert logs[f"{key}_Q_A_Prob"]["value_by_index"][idx]["avg_loss"] == pytest.approx(
                ref["avg_loss"][(key, "Prob")][i], abs=2e-5)
            assert logs[f"{key}_Q_A_PERT_Prob"]["value_by_index"][idx]["avg_loss"] == pytest.approx(
                ref["avg_loss"][(key, "PERT")][i], abs=2e-5)
            if key in ("forget", "retain"):
                assert logs[f"{key}_Q_A_PARA_Prob"]["value_by_index"][idx]["avg_loss"] == pytest.approx(
                    ref["avg_loss"][(key, "PARA")][i], abs=2e-5)
            assert logs[f"{key}_Q_A_ROUGE"]["value_by_index"][idx]["generation"] == ref["generation"][key][i]
    # and the fast generation path gives generate()'s text through greedy_answers' own API
    qs = [r["question"] for r in sets["forget"]]
    assert greedy_answers(model, tok, t, qs, max_new_tokens=12, batch_size=2) == ref["generation"]["forget"]
