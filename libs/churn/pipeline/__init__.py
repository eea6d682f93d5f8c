"""Pipeline steps shared by the ml_jobs CLI, the Kubernetes Jobs and the end-to-end tests."""
