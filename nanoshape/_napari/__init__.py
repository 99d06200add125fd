"""napari plugin of nanoshape (npe2 manifest ``napari.yaml``; install with ``pip install "nanoshape[napari]"``).

The reader (:func:`nanoshape._napari._reader.read_run`) opens a run directory of
``nanoshape analyze`` as napari layers: each micrograph as an image, its particles as a
Labels layer whose ``features`` are their rows of ``particles.csv``, and the fitted
outlines as Shapes; it is a plain function returning LayerData tuples and needs neither
napari nor a display. The widget (:func:`nanoshape._napari._widget.analyze_widget`) runs
an analysis from napari and opens its result.
"""

from nanoshape._napari._reader import get_reader, read_run

__all__ = ["get_reader", "read_run"]
