"""The runs stage: cells of the plan fine-tuned where the executor sends them, results stored.

``cells`` (the unit of work), ``execute`` (what the store lacks, to an executor), ``local``
(worker processes), ``ray_cluster`` (Ray tasks), ``store`` (one file per finished run),
``provenance`` (the environment the runs ran in).
"""
