"""Gradient difference: -NLL(forget) + retain_weight * NLL(retain)."""

from __future__ import annotations

from grun_cli.methods import register
from grun_cli.methods.ga import GradientAscent


@register("gd")
class GradientDifference(GradientAscent):
    """GA with the retain term (conf/method/gd.yaml: retain_weight 1)."""
