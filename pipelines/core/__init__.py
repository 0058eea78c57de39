"""The small core every stage builds on: settings, dataset config, errors, run identity, warehouse, registry, audit,
logging."""
