"""MLOps loop on Airflow: every pipeline step as plain, typed Python.

Each module has one job (config, warehouse, extract, validation, training, ...). The Airflow DAGs in
``dags/`` only wire these steps; every step also runs from a shell through ``python -m pipelines``.
"""

__version__ = "0.1.0"
