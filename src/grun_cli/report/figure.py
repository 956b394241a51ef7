"""What every report figure shares: the headless backend, the palette, atomic PNG writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DPI = 150


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: a cluster node or CI has no display
    import matplotlib.pyplot as plt

    return plt


def colours(n: int) -> list[Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def save(fig: Any, path: Path, dpi: int) -> Path:
    """Write the PNG through a temporary name, so a crash never leaves a half-written figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    os.replace(tmp, path)
    return path
