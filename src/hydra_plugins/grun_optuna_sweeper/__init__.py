"""grun's Hydra sweeper on Optuna's ask/tell API (``hydra/sweeper=grun_optuna``).

Hydra only instantiates sweepers found in the ``hydra_plugins`` namespace package, so the
class lives here; the search space and study handling are in ``grun_cli.sweep``. Hydra
imports this module at every start: keep its imports light (Optuna loads in ``sweep()``).
"""
