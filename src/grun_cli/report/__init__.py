"""`grun report`: paper-style tables (md, csv, tex) and plots from run folders.

Reads run folders and sweep directories only (metrics.json, run_card.json, train_log.jsonl,
GATES.json, trial records), never a model, so it works on old runs and on runs copied from a
cluster. No training code imports this package.
"""
