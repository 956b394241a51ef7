"""Model loading (Hub or local), prompt templates and the locally built tiny model."""
