"""Discrete units of a teacher: k-means over one layer's features, and per-utterance frame labels."""
