"""Datasets: annotation readers, MindRecord conversion, augmentation, the input pipeline, demo data, downloads."""
