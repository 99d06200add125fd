"""nanoshape: unbiased nanocrystal morphology from TEM micrographs."""

__version__ = "0.1.0"
