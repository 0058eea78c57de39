"""Traceability over the whole loop: the lineage of a model version and its reproduction from that record."""
