"""The plan stage: patient-level splits (``splits``) and the grid of run specs (``grid``)."""
