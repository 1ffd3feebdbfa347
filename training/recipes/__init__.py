"""Reproducible training recipes (each a runnable module: ``python -m cosmos_policy_training.recipes.<name>``)."""
