"""The runs stage: cells of the plan fine-tuned where the executor sends them, results stored.

``cells`` (the unit of work), ``executor`` (the ``Executor`` interface, in this process),
``executors`` (the `--executor` registry), ``execute`` (what the store lacks, to the executor it
is handed), ``local`` (worker processes), ``ray_cluster`` (Ray tasks), ``store`` (one file per
finished run), ``provenance`` (the environment the runs ran in), ``out_folder`` (the claimed
``--out``).
"""
