"""Example micrographs rendered by nanoshape itself (see ``nanoshape.examples``)."""
