"""Training: loss, train step, learning-rate schedule, the trainer loop and its curves."""
