"""The resolution stage: settings, config files and flags become resolved, recorded objects.

It sits between the command line and both pipelines. ``check``, ``check --probe``, ``probe`` and
``--dry-run`` all come through here, so they accept and refuse the same values with the same
message, before any model or image is loaded, and the fine-tuning runs and the probe plant the
same artifacts. Nothing here loads a model or decodes an image.

Modules: ``constraints`` (every numeric setting's accepted values), ``confounders`` (each
confounder's final parameters), ``probe`` (the probe's thresholds and what it scores),
``devices`` (the one reading of ``--device``) and ``check`` (all of ``check`` at once). This
package file imports nothing, so the settings and decision modules can check values against the
constraint table without pulling the rest of the stage in.
"""
