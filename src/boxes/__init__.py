"""Anchors (default boxes) and the box coder/matcher: pure numpy geometry, no model needed."""
