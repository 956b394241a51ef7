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


def check_composition(config_name: str, overrides: Sequence[str], command: str | None = None) -> None:
    """Compose ``config_name`` with ``overrides`` as Hydra will; a GrunError on any mistake
    (``command``: the name the user typed, for the message)."""
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
    if command:
        from grun_cli.settings_check import check_settings

        check_settings(cfg, command)


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
