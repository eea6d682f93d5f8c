"""Model training: honest time split, baseline and candidate pipelines, metrics, model cards."""
