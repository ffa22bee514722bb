"""Evaluation: post-processing (NMS), COCO scoring, reports and offline results."""
