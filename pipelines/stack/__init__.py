"""The local stack: MLflow and Airflow as native background processes, and the demo that drives them.

``python -m pipelines.stack up|down|status|demo``. State (databases, logs, pid files) lives in the
git-ignored runtime folder; the tests start the same stack on free ports in temporary folders.
"""
