"""The fine-tuning engine: one run spec in, one run result out."""
