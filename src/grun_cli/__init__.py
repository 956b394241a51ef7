"""grun-cli: an experiment runner for LLM unlearning built around GRUN (Gated Representation UNlearning)."""

__version__ = "0.1.0"
