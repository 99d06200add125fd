"""nanoshape: unbiased nanocrystal morphology from TEM micrographs.

The Python entry points (README, "Python"): :func:`analyze` micrographs (arrays of any real
dtype, files, folders) into a table of particles, :func:`render` shapes of any family,
:func:`fit` eq. 1's, :func:`load_model` the shape CNN, :func:`read_micrograph` a file; for shape
families (README, "Shape families"), :func:`fit_masks` fits any family to masks. They are
imported on first use, so ``import nanoshape`` stays quick and imports no JAX.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

__all__ = ["__version__", "analyze", "render", "fit", "load_model", "read_micrograph", "Micrograph", "fit_masks",
           "FamilyFitOptions", "ShapeFamily", "FAMILIES", "get_family"]

_LAZY = {"analyze": "nanoshape.api", "fit": "nanoshape.api", "load_model": "nanoshape.api",
         "read_micrograph": "nanoshape.io", "Micrograph": "nanoshape.io", "fit_masks": "nanoshape.familyfit",
         "FamilyFitOptions": "nanoshape.familyfit", "ShapeFamily": "nanoshape.family", "FAMILIES": "nanoshape.family",
         "get_family": "nanoshape.family"}


class _Package(types.ModuleType):
    """``nanoshape.render`` is the function :func:`nanoshape.api.render`, although a submodule
    has the same name: importing the submodule sets the package's attribute to it, which this
    property ignores. The module stays importable (``from nanoshape.render import silhouette``,
    ``importlib.import_module("nanoshape.render")``); ``import nanoshape.render as x`` binds
    the function."""

    @property
    def render(self):
        from nanoshape.api import render

        return render

    @render.setter
    def render(self, module):  # the import system recording the submodule
        pass


sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nanoshape' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
