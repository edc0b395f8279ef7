"""Turn what users bring (checkpoints of many layouts) into a backbone the engine can fine-tune."""
