"""Values several stages share, defined once so that they cannot drift apart."""

from __future__ import annotations

# The study's protocol (Juodelyte et al., Source Matters, 2024).
STUDY_LEVELS = (0.0, 0.1, 0.2, 0.5, 0.8, 1.0)  # correlation levels of the confounder
STUDY_FOLDS = 5  # train/validation folds, one run each

# The imaging modalities medaudit audits: chest X-ray and CT.
MODALITIES = ("cxr", "ct")
PROTOCOLS = ("source-matters",)  # presets that reproduce a published experiment exactly

# What every output of an audit of phantom data says about itself.
ILLUSTRATIVE_NOTE = "illustrative: synthetic data"

# The word results.json uses for a probe result that is reported but not gated.
NOT_GATED = "not-gated"

# The largest image (width x height, declared in its header) decoded by default: 8000 x 8000. A
# small compressed file can declare far more and decode to gigabytes; `max_image_pixels` raises it.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
DEFAULT_MAX_CHECKPOINT_GIB = 16.0  # model files above it are refused unread; max_checkpoint_gib
