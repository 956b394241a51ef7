"""What every unlearning run prepares once before training (the method, the data, the target
model, the row encoding: ``Setup``), the quick probe before and after (the data source's),
and the caches computed from the frozen starting model before the first step."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli import sharding
from grun_cli.data import make_source
from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_dir
from grun_cli.models.loading import load_model
from grun_cli.models.resolve import plan_target
from grun_cli.models.target import ensure_target
from grun_cli.models.template import PromptTemplate
from grun_cli.runtime import seed_everything
from grun_cli.settings import Settings

log = logging.getLogger("grun.unlearn")


@dataclass
class Setup:
    """What every unlearning run prepares once before training: the method, the data, the
    target model and the row encoding (a sequence trains several requests on it)."""

    cfg: DictConfig
    settings: Settings  # the typed groups the engine reads (train, adapter, method, probe)
    method: Any
    source: Any
    loaded: Any
    template: PromptTemplate
    idk_answers: Any
    idk_source: Any
    negatives: Any
    main: bool
    plan: Any  # the target plan (models/resolve.py), made once: loading, evaluation and its reference read it

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def max_length(self) -> int:
        return int(self.cfg.model.max_length)

    def dataset(self, forget_rows: list[dict[str, Any]], retain_rows: list[dict[str, Any]]) -> Any:
        """The paired training items (sharded on a data-parallel launch)."""
        from grun_cli import distributed
        from grun_cli.data.unlearn import ForgetRetainDataset

        cfg = self.cfg
        dataset = ForgetRetainDataset(forget_rows, retain_rows, self.tokenizer, self.template, self.max_length,
                                      pairing=str(cfg.pairing), seed=int(cfg.seed), idk_answers=self.idk_answers,
                                      encode=self.encode, negatives=self.negatives)
        if distributed.world_size() > 1:
            from grun_cli.distributed import per_process_batch

            dataset.shard(distributed.rank(), distributed.world_size(), per_process_batch(self.settings.train.batch_size))
        return dataset

    def encode(self, row: dict[str, Any]) -> dict[str, Any]:
        return self.source.encode_for_unlearning(self.tokenizer, self.template, row, self.max_length)

    def probe_sets(self, forget_rows: list[dict[str, Any]], retain_rows: list[dict[str, Any]]) -> dict[str, Any]:
        return self.source.probe_sets(forget_rows, retain_rows, self.settings.probe.max_rows)

    def probe(self, model: Any, sets: dict[str, Any], prefix: str, adapter: Any = None) -> dict[str, float]:
        """The quick check before and after (answer probabilities, or held-out text NLL)."""
        return self.source.probe(model, self.tokenizer, self.template, sets, self.max_length,
                                 self.settings.probe.batch_size, adapter=adapter, prefix=prefix)

    def trainer(self, adapter: Any, dataset: Any, folder: Path, tracker: Any, master: Any = None) -> Any:
        """``master``: the float32 master weights of a half-precision model (train/precision.py),
        whose forward runs under autocast."""
        from grun_cli.data.unlearn import UnlearnCollator
        from grun_cli.train.trainer import NaNGuard, quiet_progress, training_arguments
        from grun_cli.train.unlearn_trainer import UnlearnTrainer

        train = self.settings.train
        args = training_arguments(sharding.without_checkpoints(train) if sharding.requested() else train, str(folder),
                                  tracker.report_to, self.settings.seed,
                                  autocast=master.autocast if master is not None else None)
        return quiet_progress(UnlearnTrainer(
            model=adapter.model, args=args, train_dataset=dataset,
            data_collator=UnlearnCollator(self.tokenizer.pad_token_id), callbacks=[NaNGuard()],
            method=self.method, adapter=adapter, unlearn_warmup_steps=self.settings.adapter.unlearn_warmup_steps))

    def unsharded(self, state: dict[str, Any]) -> Any:
        """The trained weights gathered from an FSDP run (sharding.py) in the same kind of adapter
        on a fresh, whole copy of the target."""
        from grun_cli.adapters import make_adapter

        cfg = self.cfg
        fresh = load_model(ensure_target(cfg, self.plan), self.source.tokenizer_corpus, cfg.paths.cache_dir).model
        adapter = make_adapter(fresh, self.settings.adapter, model_layers=cfg.model.grun_layers)
        adapter.model.load_state_dict(state)
        return adapter

    def base_record(self, adapter: Any, fingerprint_: str) -> dict[str, Any]:
        return {"source": self.loaded.source, "revision": self.loaded.revision,
                "fingerprint": fingerprint_, "parameters": adapter.base_parameters}

    def save_adapter(self, adapter: Any, folder: Path, base: dict[str, Any], requests_done: int | None = None) -> None:
        """The adapter (and tokenizer) as one atomic folder; a sequence's model after a request
        records the requests it has seen in the same step (sequence/resume.py)."""
        with atomic_dir(folder) as tmp:
            adapter.save(tmp, base)
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            if requests_done is not None:
                from grun_cli.unlearning.sequence.resume import write_state

                write_state(tmp, requests_done)


def setup(cfg: DictConfig, settings: Settings) -> Setup:
    """Data read, target model loaded (built and cached for the tiny model); ``settings``: the
    job's typed settings (the command read them), which the run's parts are made from."""
    from grun_cli import distributed
    from grun_cli.data.idk import load_idk_answers
    from grun_cli.methods import make_method

    seed_everything(cfg.seed)
    method = make_method(settings.method)
    kind = settings.adapter.kind
    distributed.check(cfg, kind)
    sharding.check(cfg, kind, method)
    main = distributed.is_main()  # a data-parallel launch: the other ranks train and leave
    plan = plan_target(cfg)
    if cfg.model.name != "tiny":  # a big model: say what will be downloaded and trained, first
        from grun_cli.models.resolve import check_downloads, confirm

        print(plan.text(cfg), flush=True)
        check_downloads(plan, cfg)
        confirm(plan, cfg)

    source = make_source(cfg.data, data_root=cfg.paths.data_dir)
    if cfg.eval.enabled:  # a bad evaluation setting must fail now, not after training
        from grun_cli.eval.run import check_evaluation

        check_evaluation(cfg, source, kind, plan)
    with distributed.main_first():
        model_cfg = ensure_target(cfg, plan)
        loaded = load_model(model_cfg, source.tokenizer_corpus, cfg.paths.cache_dir)
    template = PromptTemplate.for_model(cfg.model)
    max_length = int(cfg.model.max_length)
    if method.needs_idk and not source.has_answers:
        raise GrunError(f"method={method.name} answers forget questions with refusals and needs QA data "
                        f"(data=tofu or synthetic), not the text corpora of data={cfg.data.name}")
    idk_answers, idk_source = (load_idk_answers(settings.method.idk_answers, cfg.paths.data_dir)
                               if method.needs_idk else (None, None))
    negatives = None
    if kind == "grun" and settings.adapter.gate_negatives:
        from grun_cli.data.gate_negatives import encode_negatives, read_prompts

        negatives = encode_negatives(read_prompts(settings.adapter.gate_negatives, cfg.paths.data_dir), source,
                                     loaded.tokenizer, template, max_length)
        log.info("gate negatives: %d prompts from %s", len(negatives), settings.adapter.gate_negatives)
    return Setup(cfg, settings, method, source, loaded, template, idk_answers, idk_source, negatives, main, plan)


def prepare_caches(settings: Settings, method: Any, adapter: Any, dataset: Any, pad_id: int) -> dict[str, Any]:
    """What the frozen starting model gives every training row, computed once before training:
    the reference values the method reads (``train.reference=cached``; live, full fine-tuning
    keeps a frozen copy) and GRUN's frozen prefix (``adapter.cache_prefix``). Returns what was
    cached, for metrics.json."""
    from tqdm.auto import tqdm

    from grun_cli.train.reference_cache import CacheReport, cache_prefix, cache_references
    from grun_cli.train.unlearn_trainer import AdapterAccess

    def progress(desc: str, n: int) -> Any:
        return tqdm(total=n, desc=desc, leave=False)

    batch_size, train = settings.probe.batch_size, settings.train
    report = CacheReport("live")
    if method.needs_reference and train.reference == "cached":
        layer = (AdapterAccess(adapter).block(getattr(method, "layer", None))
                 if "hidden" in method.references.values() else None)
        report = cache_references(dataset, method.references, adapter, layer=layer, pad_id=pad_id,
                                  batch_size=batch_size, max_bytes=float(train.reference_max_gb) * 2**30,
                                  progress=progress)
    adapter.prepare(bool(set(method.references) - set(report.values)))  # a live reference part remains
    out = report.metrics()
    if adapter.kind == "grun":
        out.update(cache_prefix(dataset, adapter, settings.adapter.cache_prefix, pad_id=pad_id,
                                batch_size=batch_size, max_bytes=float(settings.adapter.cache_prefix_max_gb) * 2**30,
                                progress=progress))
    return out
