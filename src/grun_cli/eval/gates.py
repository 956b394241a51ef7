"""GRUN gate diagnostics: gate values per layer on a set of prompts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grun_cli.eval.tofu_metrics import roc_auc
from grun_cli.inference import inference_mode
from grun_cli.io_utils import atomic_write_json
from grun_cli.models.template import PromptTemplate

#: Per-prompt gate values in a run folder, for `grun report`'s distributions:
#: {"layers": [2, 3], "sets": {"forget": [[g_layer2, g_layer3], ...one list per prompt], ...}}
GATES_FILE = "GATES.json"


def gate_values(adapter: Any, tokenizer: Any, template: PromptTemplate, questions: Sequence[str],
                *, batch_size: int = 64) -> Any:
    """Tensor (n_questions, n_layers) of sigmoid gate values at the last prompt token,
    or None when the adapter has no gate."""
    return gate_values_for_ids(adapter, [template.prompt_ids(tokenizer, q) for q in questions],
                               tokenizer.pad_token_id, batch_size=batch_size)


def gate_values_for_ids(adapter: Any, prompts: Sequence[list[int]], pad_id: int, *, batch_size: int = 64) -> Any:
    """Gate values (n_prompts, n_layers) at the last token of each tokenized prompt."""
    import torch

    if getattr(adapter, "kind", None) != "grun" or not adapter.enabled or not prompts:
        return None  # no gate, or the edit switched off (the edit_off attack)
    model = adapter.model
    device = next(model.parameters()).device
    out = []
    adapter.gate_records = []
    with inference_mode(model):
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([p + [pad_id] * (width - len(p)) for p in chunk])
            mask = (torch.arange(width)[None, :] < torch.tensor([len(p) for p in chunk])[:, None]).long()
            with adapter.editing([len(p) - 1 for p in chunk], role="diagnostics"):
                model(input_ids=ids.to(device), attention_mask=mask.to(device))
            (_, gates), = adapter.gate_records  # (layers, batch)
            adapter.gate_records = []
            out.append(gates.T.float().cpu())
    return torch.cat(out)


def gate_report(adapter: Any, tokenizer: Any, template: PromptTemplate,
                sets: dict[str, Sequence[dict[str, Any]]],
                prompt_ids: Callable[[dict[str, Any]], list[int]] | None = None, *,
                save_to: Path | None = None) -> dict[str, float]:
    """Mean gate per layer on each set's prompts, and the ROC AUC of the gate (mean over
    layers, and per layer) separating forget prompts from all the others. {} without a gate.

    ``prompt_ids`` maps a row to its tokenized prompt (default: the question in the template;
    a run passes its data source's ``gate_prompt``: a text's tokens up to its cut). ``save_to``: a run folder that also gets the
    per-prompt values as GATES.json, since means and an AUC hide how the gate splits."""
    if prompt_ids is None:
        def prompt_ids(row: dict[str, Any]) -> list[int]:
            return template.prompt_ids(tokenizer, row["question"])
    values = {k: gate_values_for_ids(adapter, [prompt_ids(r) for r in rows], tokenizer.pad_token_id)
              for k, rows in sets.items()}
    if not values or any(v is None for v in values.values()):  # no gate, or no prompts (probe.max_rows=0)
        return {}
    if save_to is not None:
        atomic_write_json(Path(save_to) / GATES_FILE, {"layers": list(adapter.layers),
                                                       "sets": {k: g.tolist() for k, g in values.items()}})
    out: dict[str, float] = {}
    for key, g in values.items():
        out[f"gate_{key}_mean"] = g.mean().item()
        for j, layer in enumerate(adapter.layers):
            out[f"gate_{key}_layer{layer}"] = g[:, j].mean().item()
    if "forget" in values and len(values) > 1:
        import torch

        rest = torch.cat([g for k, g in values.items() if k != "forget"])
        out["gate_auc"] = roc_auc(values["forget"].mean(1).tolist(), rest.mean(1).tolist())
        for j, layer in enumerate(adapter.layers):
            out[f"gate_auc_layer{layer}"] = roc_auc(values["forget"][:, j].tolist(), rest[:, j].tolist())
    return out
