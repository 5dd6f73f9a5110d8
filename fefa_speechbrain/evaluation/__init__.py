"""Evaluation: embeddings of a model, verification, metrics, noise robustness, attention."""
