"""Hydra's composition errors as one line that names the fix, before any job starts.

Hydra reports an unknown option, an unknown key or an unparsable override in several lines
and exits 1; an unknown ``experiment=`` (an optional group) it accepts silently and runs the
defaults. Composing once up front (a fraction of a second) turns each into a GrunError.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from grun_cli.config import config_dir
from grun_cli.errors import GrunError

#: config groups selected through an `optional` default: Hydra skips a missing file silently
OPTIONAL_GROUPS = ("experiment",)


def check_composition(config_name: str, overrides: Sequence[str], command: str | None = None) -> Any:
    """Compose ``config_name`` with ``overrides`` as Hydra will; a GrunError on any mistake
    (``command``: the name the user typed, for the message). Returns the composed config."""
    cfg = _compose(config_name, overrides, command)
    if command:
        from grun_cli.settings_check import check_settings

        check_settings(cfg, command)
    return cfg


#: the command whose settings each trial of a multirun command is (a sweep trial is an unlearn run)
TRIAL_COMMAND = {"sweep": "unlearn"}


def check_sweep(config_name: str, overrides: Sequence[str], command: str = "sweep") -> None:
    """A sweep's settings before its first trial: the fixed settings once, then every value of
    the search space (``hydra.sweeper.params`` and the command line's sweeps; both ends of an
    interval) with the others fixed, so a bad value fails the sweep in a second instead of
    every trial after its model loaded."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep
    from omegaconf import OmegaConf

    from grun_cli.settings_check import SettingsError, check_settings

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(list(overrides))
    except Exception as e:
        raise GrunError(f"{str(e).splitlines()[0]}; write key=value, or key=a,b / key='choice(a,b)' to sweep") from None
    fixed = [o.input_line or f"{o.get_key_element()}={o.get_value_element_as_str()}"
             for o in parsed if not o.is_sweep_override()]
    trial = TRIAL_COMMAND.get(command, command)
    cfg = _compose(config_name, fixed, command)
    check_settings(cfg, trial)
    params = cfg.hydra.sweeper.get("params") if "sweeper" in cfg.hydra else None
    params = OmegaConf.to_container(params, resolve=False) if OmegaConf.is_config(params) else {}
    try:
        space = {o.get_key_element(): o for o in parser.parse_overrides([f"{k}={v}" for k, v in (params or {}).items()])}
    except Exception as e:
        raise GrunError(f"hydra.sweeper.params: {str(e).splitlines()[0]}") from None
    space.update({o.get_key_element(): o for o in parsed if o.is_sweep_override()})  # the command line wins
    for key, o in space.items():
        value = o.value()
        texts = [str(value.start), str(value.end)] if isinstance(value, IntervalSweep) else \
            list(dict.fromkeys(o.sweep_string_iterator())) if o.is_discrete_sweep() else [o.get_value_element_as_str()]
        for text in texts:
            try:
                check_settings(_with_value(cfg, key, text, parser) or
                               _compose(config_name, [*fixed, f"{key}={text}"], command), trial)
            except SettingsError as e:
                raise SettingsError([f"{p} (a value of the search space)" for p in e.problems]) from None
            except GrunError as e:
                raise GrunError(f"the search space's {key}={text}: {e}") from None


def _with_value(cfg: Any, key: str, text: str, parser: Any) -> Any:
    """``cfg`` with one setting changed (a copy), or None where only composing again can say:
    a config group (``adapter=lora``) or an unknown key (its error names the closest one)."""
    import copy

    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if "." not in key or key.startswith(("+", "~")):
        return None
    changed = copy.deepcopy(cfg)
    try:
        OmegaConf.update(changed, key, parser.parse_override(f"{key}={text}").value(), merge=False)
    except OmegaConfBaseException:
        return None
    return changed


def _compose(config_name: str, overrides: Sequence[str], command: str | None) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    _check_optional_groups(overrides)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        except MissingConfigException as e:  # before its base class below
            raise GrunError(_missing_option(str(e))) from None
        except OverrideParseException as e:
            lines = str(e).splitlines()
            raise GrunError(f"{lines[0].replace('Error parsing', 'cannot parse')}"
                            + (f": {lines[1]}" if len(lines) > 1 else "")
                            + "; write key=value (quote values with spaces or '=': key='a=b')") from None
        except ConfigCompositionException as e:
            raise GrunError(_unknown_key(str(e), config_name, overrides, command or config_name)) from None
        except ValueError as e:  # e.g. `train=3`: a group given a number
            raise GrunError(f"{e}; a config group takes an option name (e.g. train=default)") from None
    return cfg


def _check_optional_groups(overrides: Sequence[str]) -> None:
    for override in overrides:
        key, _, value = override.partition("=")
        group = key.lstrip("+~")
        if group in OPTIONAL_GROUPS and value and value != "null":
            options = _options(group)
            if value not in options:
                raise GrunError(f"{group}={value} is not a config option; choose one of: {', '.join(options)}"
                                + _did_you_mean(value, options))


def _options(group: str) -> list[str]:
    folder = config_dir() / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def _missing_option(text: str) -> str:
    """"Could not find 'model/foo' ... Available options in 'model': ..." -> one line."""
    found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if not found:
        return text.splitlines()[0]
    group, value = found.group(1), found.group(2)
    options = [ln.strip() for ln in text.split("Available options", 1)[-1].splitlines()[1:]
               if ln.startswith("\t") and "provider=" not in ln]
    return (f"{group}={value} is not a config option; choose one of: {', '.join(options)}"
            + _did_you_mean(value, options))


def _unknown_key(text: str, config_name: str, overrides: Sequence[str], command: str) -> str:
    """"Could not override 'train.lrr'" -> the closest existing key."""
    found = re.search(r"Could not override '([^']+)'", text)
    if not found:
        return " ".join(text.split())
    key = found.group(1)
    keys = list(_known_keys(config_name, overrides))
    hint = _did_you_mean(key, keys)
    return (f"{key} is not a setting of `grun {command}`" + (hint or "")
            + f"; to add a new key on purpose write +{key}=...")


def _known_keys(config_name: str, overrides: Sequence[str]) -> Iterator[str]:
    """Every dotted key of the config with the given group choices (not the bad value keys)."""
    from hydra import compose
    from omegaconf import OmegaConf

    groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
    try:
        cfg = compose(config_name, overrides=groups)
    except Exception:  # another mistake among the groups: fall back to the defaults
        cfg = compose(config_name)
    yield from _flatten(OmegaConf.to_container(cfg, resolve=False))


def _flatten(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{prefix}{k}"
            yield from _flatten(v, f"{prefix}{k}.")


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
