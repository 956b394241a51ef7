"""The Method seam: a method is a loss over forget/retain batches, unaware of the adapter.

A batch is ``{"forget": inputs, "retain": inputs[, "idk": inputs]}``; each ``inputs`` holds
input_ids, attention_mask, labels (prompt masked) and positions (last prompt token per row;
for plain text the token before the cut).
Methods read model outputs only through :class:`ModelAccess`, which the trainer implements
on top of the adapter: ``forward`` / ``hidden`` run the model being unlearned (edit on,
gradients on), ``reference`` / ``reference_nll`` / ``reference_hidden`` the starting model
(edit off / frozen copy, no gradients). A method lists the reference values it reads in
``references`` (batch part -> ``nll`` or ``hidden``): they never change during training, so
the trainer may compute them once per example before training (``train.reference=cached``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from grun_cli.logprobs import answer_nll, sequence_nll
from grun_cli.settings import MethodSettings, NllMethodSettings

Inputs = Mapping[str, Any]
Batch = Mapping[str, Inputs]


class ModelAccess(Protocol):
    def forward(self, inputs: Inputs, role: str) -> Any:
        """Logits of the model being unlearned. ``role`` (forget / retain) labels the call
        for adapters that learn from it (GRUN's gate)."""

    def reference(self, inputs: Inputs) -> Any:
        """Logits of the starting model, without gradients."""

    def reference_nll(self, inputs: Inputs) -> Any:
        """Per-example summed NLL of the labels under the starting model (cached or live)."""

    def hidden(self, inputs: Inputs, role: str, layer: int | None) -> Any:
        """Output of decoder block ``layer`` of the model being unlearned (after its edit),
        with gradients. ``layer=None``: the last block the adapter edits or updates."""

    def reference_hidden(self, inputs: Inputs, layer: int | None) -> Any:
        """The same block's output in the starting model, without gradients."""


class Method(ABC):
    """``loss = forget_weight * forget_loss + retain_weight * NLL(retain)``.

    Subclasses define only ``forget_loss``; the retain term and the weighting live here so
    every method combines them the same way (GradDiff's composition in OpenUnlearning).
    """

    name: ClassVar[str]
    #: reference values read, by batch part: "nll" (reference_nll) or "hidden" (reference_hidden)
    references: ClassVar[Mapping[str, str]] = {}
    needs_idk: ClassVar[bool] = False  # wants batch["idk"]: forget questions with IDK answers
    #: the type of the method's settings (its conf/method/<name>.yaml): its own options typed
    settings_type: ClassVar[type[MethodSettings]] = NllMethodSettings

    @property
    def needs_reference(self) -> bool:
        """Whether the method reads the starting model at all (full fine-tuning then keeps a
        frozen copy unless the values are cached)."""
        return bool(self.references)

    def __init__(self, settings: MethodSettings) -> None:
        """``settings``: validated by the settings check (its ``settings`` type); the method
        reads them as they are."""
        self.settings = settings
        self.forget_weight = float(settings.forget_weight)
        self.retain_weight = float(settings.retain_weight)
        #: how answer NLL terms are reduced (a method without NLL terms, RMU, has none)
        self.reduction: str | None = getattr(settings, "reduction", None)

    @abstractmethod
    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        """The term that removes the forget answers (to be minimised)."""

    def retain_loss(self, batch: Batch, model: ModelAccess) -> Any:
        inputs = batch["retain"]
        return answer_nll(model.forward(inputs, "retain"), inputs["labels"], self.reduction)

    def loss(self, batch: Batch, model: ModelAccess) -> dict[str, Any]:
        """Named terms for logging; ``loss`` is the total to minimise."""
        forget = self.forget_loss(batch, model)
        terms = {"forget_loss": forget, "loss": self.forget_weight * forget}
        if self.retain_weight:
            retain = self.retain_loss(batch, model)
            terms["retain_loss"] = retain
            terms["loss"] = terms["loss"] + self.retain_weight * retain
        return terms


def forget_nll(batch: Batch, model: ModelAccess, key: str = "forget") -> tuple[Any, Any]:
    """Per-example summed NLL (and token counts) of ``batch[key]`` under the model being unlearned."""
    inputs = batch[key]
    return sequence_nll(model.forward(inputs, "forget"), inputs["labels"])


def reference_nll(batch: Batch, model: ModelAccess, key: str = "forget") -> Any:
    """Per-example summed NLL of ``batch[key]`` under the starting model (the method must list
    ``key: "nll"`` in its ``references``)."""
    return model.reference_nll(batch[key])
