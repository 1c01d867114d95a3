"""Tiny JanusFlow (every component, a few million parameters) for CPU runs and tests."""

from jf_jax import config_defaults


def get_config():
  config = config_defaults.base_config()
  config.model = config_defaults.model_tiny()
  return config
