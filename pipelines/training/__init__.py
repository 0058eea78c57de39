"""Stage 2, training: the estimator, fitting and registering, evaluation, metrics, plots, the model's input contract."""
