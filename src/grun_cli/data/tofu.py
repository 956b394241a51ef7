"""TOFU from the Hugging Face Hub (locuslab/TOFU) or a local folder of its JSON-Lines files."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grun_cli.data.source import QASource, Row
from grun_cli.errors import GrunError, first_line
from grun_cli.io_utils import read_jsonl

log = logging.getLogger(__name__)


class TofuSource(QASource):
    name = "tofu"

    def __init__(self, cfg: Mapping[str, Any], data_root: str | None = None) -> None:
        super().__init__(cfg)
        self.hub_id: str = cfg.get("hub_id") or "locuslab/TOFU"
        self.revision: str | None = cfg.get("revision")
        local_dir = cfg.get("local_dir")
        self._origin = "data.local_dir"
        if not local_dir and data_root:
            local_dir = os.path.join(data_root, "tofu")
            self._origin = "GRUN_DATA_DIR (paths.data_dir)"
        self.local_dir: Path | None = Path(local_dir).expanduser().resolve() if local_dir else None
        if self.local_dir is not None and not self.local_dir.is_dir():
            raise GrunError(
                f"TOFU folder {self.local_dir} (from {self._origin}) does not exist; point "
                "data.local_dir at a folder holding TOFU's JSON files (full.json, forget05.json, "
                "...), or unset it and GRUN_DATA_DIR to load locuslab/TOFU from the Hub"
            )

    def describe(self) -> str:
        return f"TOFU ({self.local_dir})" if self.local_dir else f"TOFU ({self.hub_id} on the Hub)"

    def _load_raw(self, split: str) -> list[Row]:
        if self.local_dir is not None:
            path = self.local_dir / f"{split}.json"
            if not path.is_file():
                raise GrunError(
                    f"TOFU split '{split}' is missing: no file {path} (folder from "
                    f"{self._origin}); copy {split}.json there or point data.local_dir elsewhere"
                )
            log.info("TOFU %s: reading %s", split, path)
            return read_jsonl(path, required=("question", "answer"))
        return self._load_hub(split)

    def _load_hub(self, split: str) -> list[Row]:
        import datasets

        log.info("TOFU %s: loading %s from the Hugging Face Hub", split, self.hub_id)
        try:
            ds = datasets.load_dataset(self.hub_id, split, split="train", revision=self.revision)
        except Exception as e:  # network, auth, unknown config: all mean "cannot get it"
            raise GrunError(
                f"cannot load TOFU split '{split}' from the Hub ({self.hub_id}): "
                f"{type(e).__name__}: {first_line(e)}. Offline? Set "
                "data.local_dir (or GRUN_DATA_DIR) to a folder holding TOFU's JSON files"
            ) from e
        return [dict(r) for r in ds]
