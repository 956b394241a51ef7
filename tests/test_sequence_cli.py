"""`grun unlearn sequence=...` through the real CLI on the tiny model: two forget requests
for GRUN (evaluated after each, reloaded bit for bit by `grun eval run=`, plotted by
`grun report`), LoRA and full fine-tuning (probe only); `base_run=` (the second request as its
own run on top of the first) gives the same weights bit for bit. Three stacked edits and the
combination arithmetic: tests/test_grun_stack.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import GOOD_TARGET, SMALL_DATA, cli_env, grun, grun_stopped

pytestmark = pytest.mark.slow

# forget01 then the rest of forget05 (one author each on 30 synthetic authors): the same target
# and retain model as the other end-to-end tests (SMALL_DATA's forget05 subset), built once.
SEQUENCE = ["sequence.requests=[forget01,forget05]", *SMALL_DATA, GOOD_TARGET, "train.max_steps=6",
            "probe.max_rows=20"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, str]:
    env = cli_env(cache_dir)
    return env


# The whole two-request run of each adapter (GRUN evaluated after each request; LoRA and full
# probed only), run once and shared by the tests below.
WHOLE = {"grun": ["method=gd", "adapter=grun", "eval.max_rows=30"],
         "lora": ["method=npo", "adapter=lora", "eval.enabled=false"],
         "full": ["method=npo", "adapter=full", "eval.enabled=false"]}


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]):
    runs: dict[str, tuple[Path, object]] = {}

    def get(adapter: str) -> tuple[Path, object]:
        if adapter not in runs:
            run = tmp_path_factory.mktemp(f"whole_{adapter}") / "run"
            # (a first run may build the target and the retain model too: a longer time limit)
            r = grun("unlearn", *WHOLE[adapter], *SEQUENCE, f"hydra.run.dir={run}", env=env, timeout=1500)
            assert r.returncode == 0, r.stderr[-3000:]
            runs[adapter] = (run, r)
        return runs[adapter]
    return get


def lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "sequence.jsonl").read_text().splitlines()]


def test_a_grun_sequence_evaluates_each_request_and_reloads_exactly(tmp_path: Path, env: dict[str, str],
                                                                   whole) -> None:
    run, r = whole("grun")
    found = lines(run)
    assert [x["request"]["request"] for x in found] == [1, 2]
    authors = [set(x["request"]["authors"]) for x in found]
    assert all(len(a) == 1 for a in authors) and len(set.union(*authors)) == 2
    for k, line in enumerate(found, start=1):
        m = line["metrics"]
        assert all(f"request_{j}_forget_Q_A_Prob" in m for j in range(1, k + 1))
        assert f"request_{k + 1}_forget_Q_A_Prob" not in m
        assert {"forgotten_forget_quality", "model_utility", "forget_quality"} <= set(m)
        assert line["request"]["retain_rows"] == 20 * (3 + 2 - k)  # 3 kept others + authors not forgotten yet
        assert (run / "requests" / f"{k:02d}" / "TOFU_EVAL.json").is_file()
        assert f"request {k} ({['forget01', 'forget05'][k - 1]})" in r.stdout
    saved = json.loads((run / "adapter" / "grun_adapter.json").read_text())["config"]
    assert [s["request"] for s in saved["stack"]] == [1] and saved["request"]["request"] == 2
    assert saved["stack"][0]["authors"] == found[0]["request"]["authors"]
    card = json.loads((run / "run_card.json").read_text())
    assert card["status"] == "complete" and card["data"]["forget_split"] == "forget05"

    again = tmp_path / "eval"
    e = grun("eval", f"run={run}", "eval.max_rows=30", "logger=none", f"hydra.run.dir={again}", env=env)
    assert e.returncode == 0, e.stderr[-3000:]
    last = json.loads((run / "requests" / "02" / "TOFU_EVAL.json").read_text())
    reloaded = json.loads((again / "TOFU_EVAL.json").read_text())
    for key in ("forget_Q_A_Prob", "retain_Q_A_Prob", "forget_truth_ratio", "ra_Q_A_Prob_normalised"):
        assert reloaded[key]["value_by_index"] == last[key]["value_by_index"], key
    evaluated = json.loads((again / "metrics.json").read_text())  # per request again, from the card
    for key in ("request_1_forget_Q_A_Prob", "request_2_forget_quality", "forgotten_forget_Q_A_ROUGE"):
        assert evaluated[key] == found[-1]["metrics"][key], key

    rep = grun("report", f"runs=[{run}]", f"out={tmp_path / 'report'}", env=env)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert (tmp_path / "report" / "sequence.png").stat().st_size > 10_000


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_lora_and_full_sequences_train_on(env: dict[str, str], whole, adapter: str) -> None:
    run, _ = whole(adapter)
    found = lines(run)
    assert [x["request"]["request"] for x in found] == [1, 2]
    assert {"request_1_forget_answer_prob", "forgotten_forget_answer_prob", "retain_answer_prob"} <= set(
        found[-1]["metrics"])
    assert json.loads((run / "adapter" / "grun_adapter.json").read_text())["kind"] == adapter


def _tensors(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return {f"{f.relative_to(folder)}:{k}": v for f in sorted(folder.rglob("*.safetensors"))
            for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("adapter", ["grun", "lora", "full"])
def test_one_more_request_on_an_earlier_run_equals_the_whole_sequence(tmp_path: Path, env: dict[str, str], whole,
                                                                       adapter: str) -> None:
    # The whole run's training settings; no evaluation here (it draws no random numbers: each
    # request seeds its own training).
    common = [WHOLE[adapter][0], f"adapter={adapter}", *SEQUENCE[1:], "eval.enabled=false"]
    first, more = tmp_path / "first", tmp_path / "more"
    r = grun("unlearn", *common, "sequence.requests=[forget01]", "sequence.split=forget05",
             f"hydra.run.dir={first}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    other = "full" if adapter != "full" else "lora"  # a request that does not fit: refused, one line
    bad = grun("unlearn", *common, f"adapter={other}", f"base_run={first}", "data.forget_split=forget05",
               f"hydra.run.dir={tmp_path / 'bad'}", env=env)
    assert bad.returncode == 2 and "other adapter.kind settings" in bad.stderr, bad.stderr[-2000:]
    r = grun("unlearn", *common, f"base_run={first}", "data.forget_split=forget05", f"hydra.run.dir={more}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    run, _ = whole(adapter)
    assert [x["request"] for x in lines(more)] == [x["request"] for x in lines(run)]
    saved, expected = _tensors(more / "adapter"), _tensors(run / "adapter")
    assert saved.keys() == expected.keys() and len(saved) > 0
    assert all(saved[k].equal(expected[k]) for k in saved), [k for k in saved if not saved[k].equal(expected[k])]
    if adapter != "grun":  # probed the same way: the same numbers
        timing = {"wall_time_s", "reference_cache_s", "prefix_cache_s"}
        assert [{k: v for k, v in x["metrics"].items() if k not in timing} for x in lines(more)] == \
            [{k: v for k, v in x["metrics"].items() if k not in timing} for x in lines(run)]
    card = json.loads((more / "run_card.json").read_text())
    assert card["status"] == "complete" and card["data"]["base_run"] == str(first)


def test_a_stopped_sequence_resumes_where_it_stopped_and_equals_the_whole(tmp_path: Path, env: dict[str, str],
                                                                         whole) -> None:
    """SIGTERM once request 2 has its first checkpoint: `resume=` loads request 1's saved model,
    keeps its line, goes on with request 2 from that checkpoint — and ends where the
    uninterrupted sequence did, every tensor and every metric."""
    stopped = tmp_path / "stopped"
    r = grun_stopped("unlearn", *WHOLE["grun"], *SEQUENCE, "train.save_steps=2", f"hydra.run.dir={stopped}",
                     ready=stopped / "requests" / "02" / "trainer" / "checkpoint-2" / "grun_checkpoint.json",
                     env=env, wait=900)
    assert r.returncode == 143 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"continue it with: grun unlearn resume={stopped}" in r.stderr, r.stderr[-2000:]
    assert (stopped / "INTERRUPTED").is_file() and not (stopped / "run_card.json").exists()
    assert json.loads((stopped / "adapter" / "sequence_state.json").read_text()) == {"requests_done": 1}
    assert len(lines(stopped)) == 1

    r = grun("unlearn", f"resume={stopped}", env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 of 2 requests finished; request 2 goes on from" in r.stderr + r.stdout
    run, _ = whole("grun")
    saved, expected = _tensors(stopped / "adapter"), _tensors(run / "adapter")
    assert saved.keys() == expected.keys() and len(saved) > 0
    assert all(saved[k].equal(expected[k]) for k in saved), [k for k in saved if not saved[k].equal(expected[k])]
    timing = {"wall_time_s", "eval_time_s", "reference_cache_s", "prefix_cache_s"}
    assert [{k: v for k, v in x["metrics"].items() if k not in timing} for x in lines(stopped)] == \
        [{k: v for k, v in x["metrics"].items() if k not in timing} for x in lines(run)]
    assert json.loads((stopped / "adapter" / "sequence_state.json").read_text()) == {"requests_done": 2}
    assert json.loads((stopped / "run_card.json").read_text())["status"] == "complete"
    assert not (stopped / "INTERRUPTED").exists()


def test_official_protocol_trains_each_edit_alone(env: dict[str, str], tmp_path: Path) -> None:
    """sequence.protocol=official: each request's GRUN edit trained alone on the base model and
    the edits combined with the release's scale; LoRA is refused in one line."""
    run = tmp_path / "official"
    r = grun("unlearn", "method=npo", "adapter=grun", "sequence.protocol=official", "eval.enabled=false",
             *SEQUENCE, f"hydra.run.dir={run}", env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads((run / "adapter" / "grun_adapter.json").read_text())
    assert saved["config"]["combine"] == "official" and len(saved["config"]["stack"]) == 1
    card = json.loads((run / "run_card.json").read_text())
    assert card["config"]["sequence"]["protocol"] == "official"
    r = grun("unlearn", "adapter=lora", "sequence.protocol=official", *SEQUENCE, env=env)
    assert r.returncode == 2 and "sequence.protocol=official trains each request's GRUN edit alone" in r.stderr
