"""`grun sweep`: objectives read from each trial's metrics.json, the selection rule, the
sweep directory's records (trial.json, trials.jsonl, best.json) and the Optuna glue.

A trial is an ordinary `grun unlearn` run folder; the sweep only adds its records beside it.
"""
