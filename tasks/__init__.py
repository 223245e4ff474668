"""Machine-learning tasks: models, local training and evaluation.

Nothing here imports ``fl_sim``; tasks only use Flower's record types, so any Flower
app can reuse them.
"""
