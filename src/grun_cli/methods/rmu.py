"""RMU (Li et al. 2024, the WMDP paper): steer the forget texts' hidden states at one block
to a fixed random direction, keep the retain texts' hidden states where they were.

    forget = MSE(h_L(forget), c * u)          u: seeded random unit vector, c: steering_coeff
    retain = MSE(h_L(retain), h_L^frozen(retain)), weighted by retain_weight (RMU's alpha)

h_L is the output of decoder block ``layer`` (for GRUN, after its edit; ``layer=null`` = the
last block the adapter edits or updates). ``positions``: ``all`` tokens of each text (the RMU
reference, minus its padding) or the ``labels`` (the tokens after the text's cut, the official
GRUN code). ``control``: one vector ``shared`` by every forget corpus (official GRUN) or one
``per_corpus`` (the RMU reference: one per topic, bio / cyber).
"""

from __future__ import annotations

from typing import Any, Literal

from grun_cli.logprobs import IGNORE_INDEX
from grun_cli.methods import register
from grun_cli.methods.base import Batch, Inputs, Method, ModelAccess
from grun_cli.methods.losses import control_vectors, masked_mse
from grun_cli.settings import MethodSettings, Positive


class RmuSettings(MethodSettings):
    layer: int | None  # the decoder block read; null: the last block the adapter edits / updates
    steering_coeff: Positive
    positions: Literal["all", "labels"]
    control: Literal["shared", "per_corpus"]
    control_seed: int


@register("rmu")
class RMU(Method):
    references = {"retain": "hidden"}
    settings_type = RmuSettings

    def __init__(self, settings: RmuSettings) -> None:
        super().__init__(settings)
        self.layer = settings.layer
        self.steering_coeff = float(settings.steering_coeff)
        self.seed = int(settings.control_seed)
        self.positions = str(settings.positions)
        self.control = str(settings.control)
        self._vectors: Any = None

    def mask(self, inputs: Inputs) -> Any:
        if self.positions == "labels":
            return inputs["labels"] != IGNORE_INDEX
        return inputs["attention_mask"].bool()

    def targets(self, inputs: Inputs, hidden_size: int) -> Any:
        """c * u per row, shape (B, 1, d)."""
        import torch

        rows = inputs["input_ids"].shape[0]
        ids = inputs.get("corpus_id")
        index = (torch.zeros(rows, dtype=torch.long) if self.control == "shared" or ids is None
                 else torch.as_tensor(ids, dtype=torch.long).clamp(min=0).cpu())
        needed = int(index.max()) + 1
        if self._vectors is None or self._vectors.shape[0] < needed or self._vectors.shape[1] != hidden_size:
            self._vectors = control_vectors(max(needed, 2), hidden_size, self.steering_coeff, self.seed)
        return self._vectors[index].unsqueeze(1)

    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        inputs = batch["forget"]
        h = model.hidden(inputs, "forget", self.layer)
        target = self.targets(inputs, h.shape[-1]).to(h.device)
        return masked_mse(h, target, self.mask(inputs).to(h.device))

    def retain_loss(self, batch: Batch, model: ModelAccess) -> Any:
        inputs = batch["retain"]
        h = model.hidden(inputs, "retain", self.layer)
        frozen = model.reference_hidden(inputs, self.layer)
        return masked_mse(h, frozen, self.mask(inputs).to(h.device))
