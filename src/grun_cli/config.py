"""Where the Hydra configs live, for both an editable checkout and an installed wheel."""

from __future__ import annotations

from pathlib import Path

from grun_cli.errors import GrunError

PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """Return the folder holding the Hydra config groups.

    A wheel carries them inside the package (``grun_cli/conf``); an editable install reads
    the repository's top-level ``conf/`` so edits take effect without reinstalling.
    """
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parents[1] / "conf"):
        if (candidate / "model").is_dir():
            return candidate
    raise GrunError(
        f"cannot find grun's configs next to {PACKAGE_DIR}; reinstall the package "
        "(`make install`, or `pip install grun-cli`)"
    )
