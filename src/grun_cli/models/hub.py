"""Is the Hugging Face Hub reachable, and what does its local cache already hold."""

from __future__ import annotations

import functools
import os
import socket

HUB_HOST = ("huggingface.co", 443)
#: OpenUnlearning's published evaluation logs (retain models' TOFU_EVAL.json): eval.retain_logs=ou:<model>
PUBLISHED_LOGS_REPO = "open-unlearning/eval"


def hub_reachable(timeout: float = 3.0) -> bool:
    """False under HF_HUB_OFFLINE, else whether a connection to the Hub opens (asked once per
    process: a firewall that drops packets costs the whole timeout)."""
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    return _connects(timeout)


@functools.cache
def _connects(timeout: float) -> bool:
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def in_local_cache(repo_id: str, repo_type: str = "model") -> bool:
    """Whether the Hub's local cache already holds ``repo_id`` (a model's config.json, or any
    snapshot of a data set)."""
    try:
        from huggingface_hub import scan_cache_dir, try_to_load_from_cache

        if repo_type == "model":
            return isinstance(try_to_load_from_cache(repo_id, "config.json", repo_type=repo_type), str)
        return any(r.repo_id == repo_id and r.repo_type == repo_type for r in scan_cache_dir().repos)
    except Exception:
        return False
