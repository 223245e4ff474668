"""What the harness (``fl_sim``), the tasks and the strategies share.

Registries, the option-declaration machinery, atomic file writes and the one door to
Flower's private API. It imports none of ``fl_sim``, ``tasks`` or ``strategies``, so
each of them may import it without an import circle.
"""
