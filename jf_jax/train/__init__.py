"""Training: optimizer, state and step."""
