"""Deployment: export (MINDIR/AIR/ONNX), ONNX helpers, predictors and drawing."""
