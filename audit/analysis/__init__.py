"""The analysis stage: AUC summaries, statistics, the budget record and the verdict.

``summaries`` (AUCs per model, set, level and fold), ``stats`` (bootstrap, DeLong, tests),
``verdict`` (the pre-declared decision), ``budget`` (what the plan cost against the study's).
"""
