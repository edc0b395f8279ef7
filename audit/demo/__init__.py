"""``medaudit demo``: two small stand-in backbones pretrained on the spot and audited."""
