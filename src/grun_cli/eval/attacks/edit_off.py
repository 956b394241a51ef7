"""``edit_off``: the unlearned run evaluated with its trained part switched off.

For GRUN this is the frozen base model: everything the run "forgot" is still in its weights,
and the gate is what keeps it from being used. That is a property of the method (it leaves the
model untouched by design), and the report shows it next to the unattacked numbers rather than
hiding it. For LoRA it is the base model likewise (the adapter removed). Full fine-tuning has
no separable edit, so the attack is refused for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from grun_cli.eval.attacks import AttackTarget, ModelAttack, register


@register("edit_off")
class EditOff(ModelAttack):
    adapters = ("grun", "lora")

    @contextlib.contextmanager
    def applied(self, target: AttackTarget) -> Iterator[None]:
        with target.adapter.disabled():
            yield
