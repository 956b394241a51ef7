"""The unlearning engine: a run's setup and caches (setup.py), one run (run.py), several
forget requests one after the other and one more request on an earlier run (sequence/)."""
