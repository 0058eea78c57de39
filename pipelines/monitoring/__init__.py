"""Monitoring: the champion's reference, Evidently drift and performance checks per window, their history, and
the retraining decision taken from it."""
