"""SSD detectors for MindSpore: shared geometry, data, networks, training and evaluation."""
