"""Recording a run: the run folder's writers (results, privacy log) and its one reader."""
