"""Configuration, device and platform helpers shared by the entry scripts."""
