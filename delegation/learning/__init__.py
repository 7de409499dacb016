"""Offline learning: dataset, evaluation, optimizer, artifact registry, training set, promotion rule."""
