"""Server strategies: Flower's, selected by name, plus wrappers that observe them.

Nothing here imports ``fl_sim``; builders take the run config as a plain mapping.
"""
