"""Every setting of a composed config checked before anything loads: types and ranges (the
typed schema of each group, settings.py), the model's depth (read from its config file, never
its weights), the rules between groups, and the files the run will read. All problems at once,
one line each, in milliseconds — not after minutes of loading, fine-tuning a target or training.

``check_settings`` returns the groups it validated, typed (``Settings``), without validating
them again; a job reads its own config's with ``read_settings`` (types and ranges only) and
hands them down to the engines.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from grun_cli.data import has_answers
from grun_cli.errors import GrunError
from grun_cli.settings import (
    ADAPTER_SETTINGS,
    SCHEDULERS,
    AdapterSettings,
    MethodSettings,
    ModelSettings,
    Probe,
    Run,
    SequenceSettings,
    Settings,
    SettingsError,
    Train,
    UnlearnRun,
    UnlearnTrain,
    dedupe,
    parse,
    schema_problems,
)

__all__ = ["SCHEDULERS", "Settings", "SettingsError", "check_settings", "group_settings", "model_depth",
           "read_settings"]


def method_settings(method: Mapping[str, Any]) -> type[MethodSettings]:
    """The settings type of ``method.name`` (its own options typed), MethodSettings when unknown
    (the registry names the choices when the run starts)."""
    from grun_cli.methods import METHODS

    name = method.get("name")
    return METHODS.get(name).settings_type if name in METHODS else MethodSettings


def group_settings(group: str, values: Mapping[str, Any]) -> AdapterSettings | MethodSettings:
    """Typed settings of one adapter or method outside a composed run (tests, benchmarks, the
    Python API): its shipped conf/<group>/<kind or name>.yaml with ``values`` on top, validated.
    An adapter's ``layers`` that follow the model (``${model.grun_layers}``) are left to the
    adapter (the paper's relative depths) unless given."""
    from omegaconf import OmegaConf

    from grun_cli.config import config_dir
    from grun_cli.methods import METHODS

    values = OmegaConf.to_container(values, resolve=True) if OmegaConf.is_config(values) else dict(values)
    option = values.get("kind" if group == "adapter" else "name")
    path = config_dir() / group / f"{option}.yaml"
    if not path.is_file():
        choices = ADAPTER_SETTINGS if group == "adapter" else METHODS.names()
        raise GrunError(f"unknown {group} '{option}'; choose one of: {', '.join(choices)}")
    shipped = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if str(shipped.get("layers", "")).startswith("${"):
        shipped["layers"] = None
    merged = {**shipped, **values}
    if group == "adapter":
        return parse(ADAPTER_SETTINGS[str(merged["kind"])], merged, "adapter")
    return parse(METHODS.get(merged["name"]).settings_type, merged, "method")


#: the groups validated by the check running now (prefix -> typed model): check_settings hands them
#: on as Settings instead of validating the config a second time
_Parsed = dict[str, BaseModel]


def _schema(cfg: Mapping[str, Any], model: type[BaseModel], prefix: str, parsed: _Parsed) -> Iterator[str]:
    try:
        parsed[prefix] = model.model_validate(dict(cfg))
    except ValidationError as e:
        yield from schema_problems(e, prefix)


# -- the model's depth, from its config file ------------------------------------------------
def model_depth(model: Mapping[str, Any]) -> int | None:
    """Decoder blocks of the model to be loaded, without loading it: the tiny model's
    architecture, a local checkpoint's config.json, the Hub cache's copy, else the model
    config's own ``num_layers`` (a known Hub model not downloaded yet). None when unknown."""
    arch = model.get("architecture") or {}
    path = model.get("name_or_path")
    if not path:
        layers = arch.get("num_layers")
        return int(layers) if isinstance(layers, int) else None
    stated = int(model["num_layers"]) if isinstance(model.get("num_layers"), int) else None
    config = Path(str(path)).expanduser() / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(path), "config.json", revision=model.get("revision"))
        except Exception:  # not a Hub id either: the loader says so
            return stated
        if not isinstance(cached, str):
            return stated
        config = Path(cached)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return stated  # the loader reports an unreadable checkpoint with its own message
    layers = data.get("num_hidden_layers") or (data.get("text_config") or {}).get("num_hidden_layers")
    return int(layers) if isinstance(layers, int) else stated


def _blocks(key: str, value: Any, depth: int | None) -> Iterator[str]:
    blocks = [value] if isinstance(value, int) else list(value or [])
    if depth is None or not all(isinstance(b, int) for b in blocks):
        return
    bad = [b for b in blocks if not 0 <= b < depth]
    if bad:
        example = depth - 1 if isinstance(value, int) else f"[{depth - 1}]"
        yield (f"{key}={value}: block{'s' if len(bad) > 1 else ''} {bad} outside the model's decoder blocks "
               f"0..{depth - 1}; e.g. {key}={example}")
    elif len(set(blocks)) != len(blocks):
        yield f"{key}={blocks}: a block is listed twice; give distinct blocks"


def _weights(model: Mapping[str, Any]) -> Iterator[str]:
    """A model with a packaged copy (model=smollm2) whose weights can't be had at all."""
    from grun_cli.models.packaged import missing_message, packaged_file, uses_packaged

    if uses_packaged(model) and packaged_file(model["offline_copy"]) is None:
        yield missing_message(model)


# -- the checks of each command ---------------------------------------------------------------
def _common(cfg: Mapping[str, Any], parsed: _Parsed, run: type[Run], train: type[Train] = Train) -> Iterator[str]:
    yield from _schema(_run_values(cfg), run, "", parsed)
    if isinstance(cfg.get("model"), Mapping):
        yield from _schema(cfg["model"], ModelSettings, "model", parsed)
        yield from _weights(cfg["model"])
    if isinstance(cfg.get("train"), Mapping):
        yield from _schema(cfg["train"], train, "train", parsed)


def _unlearn(cfg: Mapping[str, Any], parsed: _Parsed) -> Iterator[str]:
    yield from _common(cfg, parsed, UnlearnRun, UnlearnTrain)
    adapter, method, data = cfg.get("adapter") or {}, cfg.get("method") or {}, cfg.get("data") or {}
    kind = adapter.get("kind")
    if kind in ADAPTER_SETTINGS:
        yield from _schema(adapter, ADAPTER_SETTINGS[kind], "adapter", parsed)
    else:
        yield f"adapter.kind={kind}: choose one of {', '.join(ADAPTER_SETTINGS)}"
    yield from _schema(method, method_settings(method), "method", parsed)
    if isinstance(cfg.get("probe"), Mapping):
        yield from _schema(cfg["probe"], Probe, "probe", parsed)
    depth = model_depth(cfg.get("model") or {})
    if kind == "grun":
        yield from _blocks("adapter.layers", adapter.get("layers") or (cfg.get("model") or {}).get("grun_layers"),
                           depth)
    if kind == "full" and adapter.get("layers") is not None:
        yield from _blocks("adapter.layers", adapter.get("layers"), depth)
    if method.get("layer") is not None:
        yield from _blocks("method.layer", method.get("layer"), depth)
    from grun_cli.methods import METHODS

    cls = METHODS.get(method.get("name")) if method.get("name") in METHODS else None
    if cls is not None and getattr(cls, "needs_idk", False) and not has_answers(data):
        yield (f"method={method.get('name')} answers forget questions with refusals and needs QA data (data=tofu "
               f"or synthetic), not the text corpora of data={data.get('name')}; use method=rmu, npo or gd")
    evaluation = cfg.get("eval") or {}
    if evaluation.get("enabled", True) and evaluation.get("kind", "tofu") == "tofu" and not has_answers(data):
        yield (f"eval=tofu needs QA data (data=tofu or synthetic), not data={data.get('name')}; use eval=wmdp "
               "(or eval.enabled=false)")
    if evaluation.get("enabled", True):
        yield from _attacks(evaluation, kind)
    yield from _at_steps(cfg, evaluation)
    if kind == "grun" and adapter.get("gate_negatives"):
        from grun_cli.data.gate_negatives import conflicts, negative_file

        for spec in adapter.get("gate_negatives") or []:
            try:
                negative_file(str(spec), (cfg.get("paths") or {}).get("data_dir"))
            except GrunError as e:
                yield str(e)
        yield from conflicts([str(s) for s in adapter.get("gate_negatives") or []], evaluation)
    sequence = cfg.get("sequence")
    if isinstance(sequence, Mapping):
        yield from _schema(sequence, SequenceSettings, "sequence", parsed)
        yield from _sequence(cfg, sequence)
        if sequence.get("protocol") == "official" and kind != "grun":
            yield (f"sequence.protocol=official trains each request's GRUN edit alone and combines the edits; "
                   f"adapter={kind} trains one set of weights further (use sequence.protocol=stacked)")
    if cfg.get("base_run"):
        yield from _base_run(cfg)
    idk = method.get("idk_answers")
    if idk and not Path(str(idk)).expanduser().is_file():
        yield (f"method.idk_answers={idk} does not exist; give a file with one answer per line, or null for "
               "the built-in list")
    yield from _files(cfg)
    yield from _data(cfg, ["forget", "retain"])


def _sequence(cfg: Mapping[str, Any], sequence: Mapping[str, Any]) -> Iterator[str]:
    """A sequence's requests resolved against the data (every request forgets someone new)."""
    from grun_cli.unlearning.sequence.requests import is_sequence, plan, union_split

    if not is_sequence(cfg):
        return
    data = cfg.get("data") or {}
    try:
        from grun_cli.data import make_source

        if not has_answers(data):  # requests are forget corpora, named in data.forget_corpora
            plan(sequence, make_source(data, data_root=(cfg.get("paths") or {}).get("data_dir")))
            return
        split = union_split(sequence)
        source = make_source({**dict(data), "forget_split": split}, data_root=(cfg.get("paths") or {}).get("data_dir"))
        if data.get("name") != "synthetic" and getattr(source, "local_dir", None) is None:
            return  # a Hub data set: checked once it is downloaded
        plan(sequence, source)
        retain = str(sequence.get("retain_split") or "full")
        source.rows(retain)
    except GrunError as e:
        yield str(e)


def _base_run(cfg: Mapping[str, Any]) -> Iterator[str]:
    """``base_run=``: a complete unlearn run with this request's model, data and adapter kind,
    and a forget split that adds someone new."""
    from grun_cli.unlearning.sequence.base_run import BaseRun
    from grun_cli.unlearning.sequence.requests import next_request

    try:
        base = BaseRun.read(cfg["base_run"])
    except GrunError as e:
        yield str(e)
        return
    problems = list(base.mismatches(cfg))
    yield from problems
    if problems:
        return
    data = cfg.get("data") or {}
    try:
        split = str(data.get("forget_split"))
        union = base.union_split(split)
        from grun_cli.data import make_source

        source = make_source({**dict(data), "forget_split": union}, data_root=(cfg.get("paths") or {}).get("data_dir"))
        if data.get("name") != "synthetic" and getattr(source, "local_dir", None) is None:
            return  # a Hub data set: checked once it is downloaded
        next_request(source, split, base.requests(source), union)
    except GrunError as e:
        yield str(e)


def _finetune(cfg: Mapping[str, Any], parsed: _Parsed) -> Iterator[str]:
    yield from _common(cfg, parsed, Run)
    yield from _data(cfg, [str(cfg.get("split", "full")), *[str(s) for s in cfg.get("extra_splits") or []]])


def _data(cfg: Mapping[str, Any], splits: list[str]) -> Iterator[str]:
    """The data files the run will read, each row checked (JSON, the fields it needs), when they
    are local files (a Hub data set is checked as it downloads)."""
    from grun_cli.data import make_source

    data = cfg.get("data")
    if not isinstance(data, Mapping):
        return
    try:
        source = make_source(data, data_root=(cfg.get("paths") or {}).get("data_dir"))
        if data.get("name") != "synthetic" and getattr(source, "local_dir", None) is None:
            return
        for split in splits:
            source.rows(source.resolve(split))
    except GrunError as e:
        yield str(e)


def _eval(cfg: Mapping[str, Any], parsed: _Parsed) -> Iterator[str]:
    yield from _schema({"seed": cfg.get("seed")}, Run, "", parsed)
    run = cfg.get("run")
    if run is not None and not str(run).strip():
        yield ("run= is empty (the shell may have expanded an unset variable); give a run folder, or leave run= "
               "out to evaluate model=")
    adapter = None
    if run is not None and str(run).strip():  # the folder's card, markers and checksums, before anything loads
        from grun_cli.train.run_card import read_run_card, trained_adapter

        try:
            adapter = trained_adapter(read_run_card(Path(str(run)).expanduser()))
        except GrunError as e:
            yield str(e)
    yield from _attacks(cfg.get("eval") or {}, adapter)
    yield from _files(cfg)


def _attacks(evaluation: Mapping[str, Any], adapter: str | None) -> Iterator[str]:
    """eval.attacks: known names, possible for this evaluation and adapter, sound settings.
    (``grun eval run=`` may take another data set's evaluation from the run: checked again
    against it before any model loads.)"""
    from grun_cli.eval.attacks import problems

    names = evaluation.get("attacks") or []
    if not isinstance(names, (list, tuple)):
        yield f"eval.attacks={names!r}: give a list, e.g. eval.attacks=[quantize_4bit,edit_off]"
        return
    yield from problems(names, evaluation.get("attack_settings"), str(evaluation.get("kind", "tofu")), adapter)


def _at_steps(cfg: Mapping[str, Any], evaluation: Mapping[str, Any]) -> Iterator[str]:
    steps = evaluation.get("at_steps") or []
    if not steps:
        return
    if not isinstance(steps, (list, tuple)) or not all(isinstance(s, int) and s >= 1 for s in steps):
        yield f"eval.at_steps={steps}: give training steps >= 1, e.g. eval.at_steps=[50,100,150]"
    elif evaluation.get("kind", "tofu") != "tofu" or not evaluation.get("enabled", True):
        yield "eval.at_steps evaluates TOFU along training: it needs eval=tofu (or synthetic) with eval.enabled=true"
    elif (cfg.get("sequence") or {}).get("requests") or cfg.get("base_run"):
        yield "eval.at_steps is for one request: a sequence (sequence=, base_run=) evaluates after each request instead"


def _files(cfg: Mapping[str, Any]) -> Iterator[str]:
    """The retain model's logs: present and a TOFU per-sample log (matched to the forget
    questions once the data is read, still before any model loads: check_evaluation)."""
    from grun_cli.eval.reference import SHORT_PREFIX, read_logs

    logs = (cfg.get("eval") or {}).get("retain_logs")
    if isinstance(logs, str) and logs and not logs.startswith(SHORT_PREFIX):  # published: fetched later
        try:
            read_logs(logs)
        except GrunError as e:
            yield str(e)


def _plain(cfg: Any, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A composed config as plain data (interpolations resolved), without Hydra's own node;
    ``keys``: only those top-level entries."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    plain: dict[str, Any] = {}
    for key in cfg:
        if key == "hydra" or (keys is not None and key not in keys):
            continue
        try:
            plain[str(key)] = OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) \
                else cfg[key]
        except OmegaConfBaseException as e:
            raise SettingsError([f"{key}: {' '.join(str(e).split())}"]) from None
    return plain


#: the config groups a command hands down typed (Settings)
_GROUPS = ("model", "train", "adapter", "method", "probe", "sequence")


def read_settings(cfg: Any, command: str) -> Settings:
    """The typed groups of ``cfg`` (a composed config) for ``command``: types and ranges only,
    no files or cross-group rules. A job reads its own config so (Hydra composes it again, on
    another machine under Slurm); ``check_settings`` ran the full check before it started."""
    plain = _plain(cfg, ("seed", "pairing", *_GROUPS))
    group = {name: plain.get(name) for name in _GROUPS}
    parsed: _Parsed = {"": parse(UnlearnRun if command == "unlearn" else Run, _run_values(plain), "")}
    if isinstance(group["model"], Mapping):
        parsed["model"] = parse(ModelSettings, group["model"], "model")
    if command == "finetune":
        parsed["train"] = parse(Train, plain["train"], "train")
    elif command == "unlearn":
        adapter, method, sequence = group["adapter"], group["method"], group["sequence"]
        kind = str(adapter.get("kind"))
        if kind not in ADAPTER_SETTINGS:
            raise SettingsError([f"adapter.kind={kind}: choose one of {', '.join(ADAPTER_SETTINGS)}"])
        parsed.update(train=parse(UnlearnTrain, group["train"], "train"),
                      adapter=parse(ADAPTER_SETTINGS[kind], adapter, "adapter"),
                      method=parse(method_settings(method), method, "method"), probe=parse(Probe, group["probe"], "probe"))
        if isinstance(sequence, Mapping):
            parsed["sequence"] = parse(SequenceSettings, sequence, "sequence")
    return _settings(parsed, command)


def _run_values(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {"seed": cfg.get("seed"), **({"pairing": cfg["pairing"]} if "pairing" in cfg else {})}


def _settings(parsed: _Parsed, command: str) -> Settings:
    """The groups a command hands down, from those its check (or read_settings) validated."""
    seed = int(parsed[""].seed)
    if command not in ("finetune", "unlearn"):
        return Settings(seed, parsed.get("model"))
    wanted = ("train",) if command == "finetune" else ("train", "adapter", "method", "probe")
    missing = [name for name in wanted if name not in parsed]
    if missing:
        raise SettingsError([f"{name}: missing or not a group of settings; choose one, e.g. {name}=<its default>"
                             for name in missing])
    if command == "finetune":
        return Settings(seed, parsed.get("model"), parsed["train"])
    return Settings(seed, parsed.get("model"), parsed["train"], parsed["adapter"], parsed["method"],
                    parsed["probe"], parsed.get("sequence"))


CHECKS: dict[str, Callable[[Mapping[str, Any], _Parsed], Iterator[str]]] = {
    "unlearn": _unlearn, "finetune": _finetune, "eval": _eval}


def check_settings(cfg: Any, command: str) -> Settings | None:
    """Raise SettingsError listing every problem of ``cfg`` (a composed config) for ``command``;
    else its typed settings (None for a command without a check)."""
    check = CHECKS.get(command)
    if check is None:
        return None
    plain = _plain(cfg)
    parsed: _Parsed = {}
    problems = dedupe(check(plain, parsed))
    if problems:
        raise SettingsError(problems)
    return _settings(parsed, command)
