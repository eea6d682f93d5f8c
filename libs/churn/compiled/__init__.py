"""A fitted scikit-learn model as plain numpy arithmetic, trusted only after it equals predict_proba.

numpy + scikit-learn only (no pandas): the API and batch scoring both use it.
"""
