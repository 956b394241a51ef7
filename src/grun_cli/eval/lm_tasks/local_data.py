"""Datasets for grun's offline copies of lm-eval tasks (wmdp_bio_local, wmdp_cyber_local,
mmlu_local): a JSON-Lines file of {question, choices, answer} rows.

The file is ``data_file`` (grun passes it through the task's dataset_kwargs; with the plain
`lm-eval` command give ``--metadata '{"data_file": "..."}'``), else the default copy under
``$GRUN_DATA_DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grun_cli.data.mcq_files import DEFAULT_FILES, default_file


def _load(task: str, data_file: str | None = None, **_: Any) -> Any:
    import datasets

    path = Path(data_file).expanduser() if data_file else default_file(task)
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{task}_local needs its questions file: {path or 'none given'} does not exist. Set GRUN_DATA_DIR "
            f"(the file is then $GRUN_DATA_DIR/{DEFAULT_FILES[task][-1]}) or pass data_file"
        )

    def clean(row: dict[str, Any]) -> dict[str, Any]:
        return {"question": row["question"], "choices": list(row["choices"]), "answer": int(row["answer"]),
                "subject": row.get("subject") or "all"}

    ds = datasets.load_dataset("json", data_files={"test": str(path)})
    return ds.map(clean, remove_columns=[c for c in ds["test"].column_names
                                         if c not in ("question", "choices", "answer", "subject")])


def wmdp_bio(**kwargs: Any) -> Any:
    return _load("wmdp_bio", **kwargs)


def wmdp_cyber(**kwargs: Any) -> Any:
    return _load("wmdp_cyber", **kwargs)


def mmlu(**kwargs: Any) -> Any:
    return _load("mmlu", **kwargs)
