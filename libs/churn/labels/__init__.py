"""Point-in-time churn labels and the training-set join: see `churn.labels.build`."""
