"""A napari dock widget that runs ``nanoshape analyze`` and opens its run directory (magicgui)."""

# no `from __future__ import annotations`: magicgui reads the parameters' types to build the widget
from pathlib import Path

__all__ = ["analyze_widget"]


def analyze_widget():
    """The widget: input (a micrograph or a folder), output (the run directory), an optional pixel size.

    The analysis runs in a napari worker thread, so the viewer stays responsive; when it
    is done, the run's layers (:func:`nanoshape._napari._reader.read_run`) are added.
    """
    from magicgui import magic_factory  # napari's own dependency: present wherever the widget is shown

    @magic_factory(call_button="Analyse",
                   input={"label": "micrograph or folder", "mode": "r"},
                   output={"label": "run directory", "mode": "d"},
                   pixel_size_nm={"label": "pixel size (nm, 0: from the file)", "min": 0.0, "max": 1e4, "step": 0.001})
    def analyze(viewer: "napari.viewer.Viewer", input: Path = Path("."), output: Path = Path("nanoshape-results"),
                pixel_size_nm: float = 0.0) -> None:
        from napari.layers import Layer
        from napari.qt.threading import thread_worker

        from nanoshape._napari._reader import read_run
        from nanoshape.pipeline import AnalyzeOptions, run_analysis
        from nanoshape.schedule import DistributeOptions

        options = AnalyzeOptions(pixel_size_nm=pixel_size_nm or None)

        @thread_worker(connect={"returned": lambda layers: [viewer.add_layer(Layer.create(*layer)) for layer in layers]})
        def work():
            run_analysis(str(input), output, options, distribute=DistributeOptions(workers=0))
            return read_run(output)

        work()

    return analyze()
