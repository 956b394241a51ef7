"""The lm-eval bridge: its accuracy equals the argmax of choice log-likelihoods computed
directly (with and without the GRUN edit), single- and multi-token continuations, batch size,
and the offline task configs reading local files."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from grun_cli.errors import GrunError
from grun_cli.eval.lm_eval_run import local_task_config, make_lm, resolve_tasks, run_tasks

from conftest import new_adapter, write_mcq

DESCRIPTION = "The following are multiple choice questions (with answers) about biology.\n\n"


@pytest.fixture(scope="module")
def sharp(tiny):
    """The tiny model with larger random weights: sharp, varied predictions."""
    model = copy.deepcopy(tiny.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return SimpleNamespace(model=model, tokenizer=tiny.tokenizer)


def grun_adapter(model):
    adapter = new_adapter(model, {"kind": "grun", "layers": [2, 3], "rank": 4, "gate": "linear"})
    torch.manual_seed(1)
    with torch.no_grad():
        for edit in adapter.edits.values():
            edit.gate.weight.zero_()
            edit.gate.bias.fill_(5.0)  # open on every prompt
            edit.loreft.learned_source.weight.normal_(std=2.0)
            edit.loreft.learned_source.bias.normal_(std=2.0)
    return adapter


QUESTIONS = [
    {"question": f"Who wrote book number {i} of the series?", "answer": i % 4,
     "choices": [f"Author {i}", "The river authority", f"Someone born in {1900 + i}", "Nobody at all"]}
    for i in range(12)
]


def mcq_file(tmp_path: Path) -> Path:
    return write_mcq(tmp_path / "mcq.jsonl", rows=QUESTIONS)


def lora_adapter(model):
    adapter = new_adapter(model, {"kind": "lora", "rank": 4, "alpha": 32, "dropout": 0.0,
                                   "target_modules": "all-linear"})
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in adapter.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return adapter


def direct_loglik(model, tokenizer, adapter, context: str, continuation: str) -> float:
    """One unbatched forward of BOS + context + continuation, edit on the last context token."""
    ctx = [tokenizer.bos_token_id] + tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = [tokenizer.bos_token_id] + tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    ids = torch.tensor([whole])
    with torch.no_grad():
        if adapter is not None and adapter.kind == "grun":
            with adapter.editing([len(ctx) - 1]):
                logits = model(input_ids=ids).logits
        else:
            logits = model(input_ids=ids).logits
    logp = torch.log_softmax(logits[0].float(), -1)
    return sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont))


def direct_accuracy(model, tokenizer, adapter) -> float:
    right = 0
    for q in QUESTIONS:
        context = DESCRIPTION + (f"{q['question']}\nA. {q['choices'][0]}\nB. {q['choices'][1]}\n"
                                 f"C. {q['choices'][2]}\nD. {q['choices'][3]}\nAnswer:")
        scores = [direct_loglik(model, tokenizer, adapter, context, f" {c}") for c in "ABCD"]
        right += int(max(range(4), key=scores.__getitem__) == q["answer"])
    return right / len(QUESTIONS)


@pytest.mark.parametrize("with_edit", ["none", "grun", "lora"])
def test_accuracy_equals_direct_argmax(sharp, tmp_path, with_edit) -> None:
    model = copy.deepcopy(sharp.model)
    adapter = {"none": lambda m: None, "grun": grun_adapter, "lora": lora_adapter}[with_edit](model)
    lm = make_lm(adapter.model if adapter else model, sharp.tokenizer, adapter, batch_size=5, add_bos=True)
    metrics, raw = run_tasks(lm, {"tasks": ["wmdp_bio"], "task_source": "auto",
                                        "bootstrap_iters": 1000, "files": {"wmdp_bio": str(mcq_file(tmp_path))}}, None)
    assert metrics["wmdp_bio_n"] == len(QUESTIONS)
    scored = adapter.model if adapter else model
    assert metrics["wmdp_bio_acc"] == pytest.approx(direct_accuracy(scored, sharp.tokenizer, adapter))
    assert metrics["wmdp_bio_acc_stderr"] > 0
    assert metrics["lm_eval_batch_size"] == 5
    assert "wmdp_bio_local" in raw["results"]


def test_edit_changes_the_loglikelihoods_multi_token(sharp) -> None:
    """Multi-token continuations: the bridge's batched, grouped, padded scores equal single
    direct forwards, and the edit (on the last context token) changes them."""
    model = copy.deepcopy(sharp.model)
    adapter = grun_adapter(model)
    tok = sharp.tokenizer
    pairs = [("Question: Where was the author born?\nAnswer:", " In a small town by the river"),
             ("Question: Where was the author born?\nAnswer:", " Paris"),
             ("Question: What did she write?\nAnswer:", " Novels about the sea and its people")]
    lm = make_lm(model, tok, adapter, batch_size=2, add_bos=True)
    reqs = [((c, x), lm.tok_encode(c), lm.tok_encode(c + x)[len(lm.tok_encode(c)):]) for c, x in pairs]
    assert any(len(r[2]) > 1 for r in reqs)
    got = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    for (c, x), (score, _) in zip(pairs, got, strict=True):
        assert score == pytest.approx(direct_loglik(model, tok, adapter, c, x), abs=1e-4)
    with adapter.disabled():
        off = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    for (c, x), (score, _) in zip(pairs, off, strict=True):
        assert score == pytest.approx(direct_loglik(model, tok, None, c, x), abs=1e-4)
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(got, off, strict=True))


def test_offline_task_configs_read_local_files(tmp_path, monkeypatch) -> None:
    path = mcq_file(tmp_path)
    for task in ("wmdp_bio", "wmdp_cyber", "mmlu"):
        config = local_task_config(task, path)
        assert config["task"] == f"{task}_local" and config["output_type"] == "multiple_choice"
        dataset = config["custom_dataset"](**config["dataset_kwargs"])
        assert len(dataset["test"]) == len(QUESTIONS)
        assert dataset["test"][3]["answer"] == 3 and dataset["test"][0]["choices"][0] == "Author 0"
    # GRUN_DATA_DIR set: the local copies are used, from the data folder
    data = tmp_path / "data"
    (data / "wmdp").mkdir(parents=True)
    (data / "wmdp" / "bio_test.jsonl").write_text(path.read_text())
    specs, names, origins = resolve_tasks(["wmdp_bio", "arc_easy"], "auto", None, str(data))
    assert specs[0]["dataset_kwargs"]["data_file"] == str((data / "wmdp" / "bio_test.jsonl").resolve())
    assert specs[1] == "arc_easy" and names == {"wmdp_bio_local": "wmdp_bio", "arc_easy": "arc_easy"}
    assert origins["wmdp_bio"].startswith("local file")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve_tasks(["mmlu"], "auto", None, None)[0] == ["mmlu"]  # online: lm-eval's own task
    with pytest.raises(GrunError, match="no local questions file"):
        resolve_tasks(["mmlu"], "local", None, str(data))
    with pytest.raises(GrunError, match="task_source"):
        resolve_tasks(["mmlu"], "offline", None, None)
    with pytest.raises(GrunError, match="eval.tasks is empty"):
        resolve_tasks([], "auto", None, None)


def test_bos_where_training_had_it(sharp) -> None:
    lm = make_lm(sharp.model, sharp.tokenizer, None, batch_size=2, add_bos=True)
    bos = sharp.tokenizer.bos_token_id
    assert lm.tok_encode("Answer:")[0] == bos
    assert lm.tok_encode("Answer:", add_special_tokens=False)[0] != bos  # rolling windows ask for none
    ids, mask = lm.tok_batch_encode(["Question: a\nAnswer:", "Q"])
    assert ids[0, 0] == bos and ids[1, -2] == bos and mask[1, 0] == 0  # left-padded, BOS first
    plain = make_lm(sharp.model, sharp.tokenizer, None, batch_size=2, add_bos=False)
    assert plain.tok_encode("Answer:")[0] != bos


def test_rolling_loglikelihood_scores_every_token_after_bos(sharp) -> None:
    """Perplexity tasks: every token of the text is scored, given BOS (and never BOS itself)."""
    from lm_eval.api.instance import Instance

    text = "Question: Where was the author born?\nAnswer: In a small town by the river"
    lm = make_lm(sharp.model, sharp.tokenizer, None, batch_size=2, add_bos=True)
    got = lm.loglikelihood_rolling([Instance(request_type="loglikelihood_rolling", doc={}, arguments=(text,), idx=0)],
                                   disable_tqdm=True)[0]
    tok = sharp.tokenizer
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(sharp.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    expected = sum(logp[k, t].item() for k, t in enumerate(ids[1:]))
    assert got == pytest.approx(expected, abs=1e-3)
