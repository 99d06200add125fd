"""Hydra YAML configs, installed with the package as ``nanoshape.configs``."""
