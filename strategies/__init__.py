"""Server strategies: Flower's, selected by name, plus wrappers that observe them.

Nothing here imports ``fl_sim`` or ``tasks``; builders take the run's typed settings
(:class:`fl_core.options.Settings`) and read their option groups from them.
"""
