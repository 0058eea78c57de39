"""Stage 1, data: sources, seeding the warehouse, snapshots, features and target, validation with Great Expectations."""
