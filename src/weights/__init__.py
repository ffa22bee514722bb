"""Checkpoints: loading, saving, and converting pre-trained backbone weights."""
