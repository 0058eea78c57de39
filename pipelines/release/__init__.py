"""Stage 3, release: the promotion gate, approval, deployment (the ``champion`` alias) and rollback."""
