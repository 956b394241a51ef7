"""Scoring primitives with no notion of an evaluation protocol: answer likelihoods over
batched prompts (likelihood.py), greedy generation with the edit applied as trained
(generation.py), ROUGE-L (rouge.py) and held-out text NLL (text_nll.py). Fine-tuning's
memorisation check, the unlearning probe, the reference caches and the TOFU evaluation all
score through them."""
