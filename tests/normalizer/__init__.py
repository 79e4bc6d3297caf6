"""The normalizer: rules, expressions."""
