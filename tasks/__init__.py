"""Machine-learning tasks: models, local training and evaluation.

Nothing here imports ``fl_sim``; tasks read their typed option groups from the run's
settings and use only Flower's record types, so any Flower app can reuse them.
"""
