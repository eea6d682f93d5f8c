"""churn: the shared library of churn-mlops (data, features, labels, training, registry, ...).

Subpackages are imported explicitly (`from churn.data import generate`); package `__init__`
files import nothing so that light modules never drag pandas into the API.
"""
