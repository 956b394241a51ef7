"""``eval.at_steps=[...]``: the TOFU evaluation of the model being unlearned at chosen training
steps, as the official release evaluates its checkpoints every 50 steps (``--save_eval_steps``)
— here without saving weights: ``steps/<n>/`` gets metrics.json and TOFU_EVAL.json. `grun
report` plots forget quality and model utility along the steps.

The evaluation runs between two optimizer steps with the random states saved and put back and
the model back in training mode, so the training itself is the one a run without it does
(tests/test_unlearn_steps.py: identical final metrics and adapter).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import TrainerCallback

from grun_cli.eval.run import run_evaluation
from grun_cli.inference import inference_mode
from grun_cli.io_utils import atomic_write_json

log = logging.getLogger("grun.unlearn")

STEPS_DIR = "steps"


def requested_steps(cfg: DictConfig) -> list[int]:
    return sorted({int(s) for s in (OmegaConf.select(cfg, "eval.at_steps") or [])})


class StepEvaluation(TrainerCallback):
    def __init__(self, cfg: DictConfig, out: Path, *, adapter: Any, tokenizer: Any, source: Any,
                 plan: Any = None) -> None:
        self.steps = set(requested_steps(cfg))
        self.out, self.adapter, self.tokenizer, self.source, self.plan = out, adapter, tokenizer, source, plan
        self.cfg = cfg.copy()
        with open_dict(self.cfg):
            self.cfg.eval.attacks = []  # the headline metrics only: attacks belong to the final model
        self.done: list[int] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = int(state.global_step)
        if step not in self.steps or step in self.done or not state.is_world_process_zero:
            return
        if step >= int(state.max_steps):  # the run's own evaluation covers the last step
            return

        folder = self.out / STEPS_DIR / str(step)
        folder.mkdir(parents=True, exist_ok=True)
        log.info("eval.at_steps: evaluating the model at step %d into %s", step, folder)
        saved = _random_states()
        model = self.adapter.model
        try:
            with inference_mode(model, no_grad=False):
                metrics = run_evaluation(self.cfg, folder, model=model, tokenizer=self.tokenizer, source=self.source,
                                         adapter=self.adapter, text_nll=False, plan=self.plan)
        finally:
            _restore(saved)
        atomic_write_json(folder / "metrics.json", {"step": step, **metrics})
        self.done.append(step)


def _random_states() -> dict[str, Any]:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _restore(saved: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(saved["python"])
    np.random.set_state(saved["numpy"])
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda"])
