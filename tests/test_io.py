"""Readers: pixels, pixel sizes and the errors a user sees, on real instrument files and on
files of every supported format written here."""

from __future__ import annotations

import json
import pickle
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import shared_data
from nanoshape.io import (
    SUPPORTED_SUFFIXES,
    Micrograph,
    MicrographError,
    find_micrographs,
    read_micrograph,
    write_tiff,
)


def _image(shape=(40, 50), dtype=np.uint16, seed=0) -> np.ndarray:
    """A test pattern that uses most of the dtype's range, distinct in every pixel row."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.normal(0.0, 1000.0, shape)).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _assert_error(path: Path, *words: str, **kwargs) -> MicrographError:
    with pytest.raises(MicrographError) as caught:
        read_micrograph(path, **kwargs)
    message = str(caught.value)
    assert path.name in message
    for word in words:
        assert word.lower() in message.lower(), message
    assert caught.value.path == path
    return caught.value


# --------------------------------------------------------------------------- real instrument files


def test_imagej_uint16_sample_gives_calibration_and_signed_values():
    path = shared_data("formats", "imagej_uint16_tif", "SAMPLE_0001.tif")
    raw = tifffile.imread(path)
    micrograph = read_micrograph(path)
    assert micrograph.pixels.dtype == np.float32 and micrograph.pixels.shape == (1024, 1024)
    assert micrograph.pixel_size_nm == pytest.approx(2.593, abs=1e-3)
    assert micrograph.meta["pixel_size_source"] == "metadata: ImageJ"
    # ImageJ stores signed 16-bit data with +32768; the c0 = -32768 function undoes it
    assert micrograph.pixels.min() == raw.min() - 32768.0
    assert micrograph.pixels.max() == raw.max() - 32768.0
    np.testing.assert_array_equal(micrograph.pixels[:3, :5], raw[:3, :5].astype(np.float32) - 32768.0)
    assert micrograph.meta["value_calibration"]["c0"] == -32768.0
    assert micrograph.meta["dtype"] == "uint16"
    assert micrograph.stem == "SAMPLE_0001"
    json.dumps(micrograph.meta)


def test_gatan_dm4_sample_gives_calibration_and_vendor_tags():
    path = shared_data("formats", "gatan_dm4", "jeol_haadf.dm4")
    from rsciio.digitalmicrograph import file_reader

    expected = file_reader(str(path))[0]["data"]
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm == pytest.approx(1.249, abs=1e-3)
    assert micrograph.meta["pixel_size_source"] == "metadata: DigitalMicrograph"
    np.testing.assert_array_equal(micrograph.pixels, expected)
    assert micrograph.meta["format"] == "dm4"
    assert micrograph.meta["vendor"]["voltage_kv"] == pytest.approx(80.0)
    json.dumps(micrograph.meta)


def test_truncated_dm4_is_an_error(tmp_path):
    source = shared_data("formats", "gatan_dm4", "jeol_haadf.dm4")
    path = tmp_path / "cut.dm4"
    path.write_bytes(source.read_bytes()[:20000])
    _assert_error(path, "cannot be read")


def test_override_beats_metadata_and_both_are_recorded():
    path = shared_data("formats", "imagej_uint16_tif", "SAMPLE_0001.tif")
    micrograph = read_micrograph(path, pixel_size_nm=0.5)
    assert micrograph.pixel_size_nm == 0.5
    assert micrograph.meta["pixel_size_source"] == "pixel_size_nm override"
    assert micrograph.meta["pixel_size_nm_metadata"] == pytest.approx(2.593, abs=1e-3)
    assert micrograph.meta["pixel_size_source_metadata"] == "metadata: ImageJ"


# --------------------------------------------------------------------------- write_tiff


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32])
def test_write_tiff_round_trips_pixels_and_pixel_size(tmp_path, dtype):
    pixels = _image((33, 47), dtype)
    if dtype == np.uint32:
        pixels = pixels % (1 << 24)  # label ids, exact in float32 and above uint16
        pixels[0, 0] = 70_000
    path = tmp_path / "written.tif"
    write_tiff(path, pixels, pixel_size_nm=0.37)
    assert tifffile.imread(path).dtype == dtype
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, pixels.astype(np.float32))
    assert micrograph.pixel_size_nm == pytest.approx(0.37, rel=1e-9)
    assert micrograph.meta["dtype"] == np.dtype(dtype).name
    assert micrograph.meta["warnings"] == []


def test_write_tiff_without_pixel_size_reads_back_uncalibrated_without_warnings(tmp_path):
    path = tmp_path / "plain.tif"
    write_tiff(path, _image((20, 30), np.uint16))
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm is None and micrograph.meta["pixel_size_source"] is None
    assert micrograph.meta["warnings"] == []


@pytest.mark.parametrize("pixels, size", [
    (np.zeros((4, 4, 3), np.uint8), 1.0),
    (np.zeros((4, 4), np.float64), 1.0),
    (np.zeros((4, 4), np.uint8), 0.0),
    (np.zeros((4, 4), np.uint8), float("nan")),
])
def test_write_tiff_rejects_what_it_cannot_write(tmp_path, pixels, size):
    with pytest.raises(ValueError):
        write_tiff(tmp_path / "x.tif", pixels, pixel_size_nm=size)


# --------------------------------------------------------------------------- TIFF flavours


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64])
def test_plain_tiff_of_every_depth_keeps_values(tmp_path, dtype):
    pixels = _image((30, 41), dtype)
    path = tmp_path / "plain.tiff"
    tifffile.imwrite(path, pixels)
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, pixels.astype(np.float32))
    assert micrograph.pixel_size_nm is None
    assert micrograph.meta["dtype"] == np.dtype(dtype).name and micrograph.meta["shape"] == [30, 41]


def test_imagej_signed_offset_written_here(tmp_path):
    signed = _image((20, 25), np.int16)
    path = tmp_path / "signed.tif"
    description = "ImageJ=1.53t\nunit=micron\ncf=0\nc0=-32768.0\nc1=1.0\nvunit=Gray Value\n"
    tifffile.imwrite(path, (signed.astype(np.int32) + 32768).astype(np.uint16), description=description,
                     resolution=(500.0, 500.0), metadata=None)
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, signed.astype(np.float32))
    assert micrograph.pixel_size_nm == pytest.approx(2.0)


@pytest.mark.parametrize("unit, per_unit, expected_nm", [
    ("nm", 0.5, 2.0), ("\\u00B5m", 400.0, 2.5), ("µm", 400.0, 2.5), ("A", 0.1, 1.0), ("Å", 0.1, 1.0),
])
def test_imagej_units(tmp_path, unit, per_unit, expected_nm):
    path = tmp_path / "units.tif"
    description = f"ImageJ=1.53t\nunit={unit}\n".encode()  # TIFF text is ASCII; some writers put UTF-8 in
    tifffile.imwrite(path, _image((10, 12), np.uint8), description=description,
                     resolution=(per_unit, per_unit), metadata=None)
    assert read_micrograph(path).pixel_size_nm == pytest.approx(expected_nm)


@pytest.mark.parametrize("metadata, expected_nm", [
    ({"PhysicalSizeX": 0.8, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 0.8, "PhysicalSizeYUnit": "nm"}, 0.8),
    ({"PhysicalSizeX": 0.0025, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.0025, "PhysicalSizeYUnit": "µm"}, 2.5),
    ({"PhysicalSizeX": 0.004, "PhysicalSizeY": 0.004}, 4.0),  # OME's default unit is µm
])
def test_ome_tiff_physical_size(tmp_path, metadata, expected_nm):
    path = tmp_path / "image.ome.tif"
    tifffile.imwrite(path, _image(), ome=True, metadata=metadata)
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm == pytest.approx(expected_nm)
    assert micrograph.meta["pixel_size_source"] == "metadata: OME"


def test_editor_dpi_is_not_a_calibration(tmp_path):
    path = tmp_path / "editor.tif"
    tifffile.imwrite(path, _image(), resolution=(72, 72), resolutionunit="INCH")
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm is None
    assert any("print setting" in w for w in micrograph.meta["warnings"])


def test_imagej_inch_calibration_from_editor_dpi_is_not_a_calibration(tmp_path):
    path = tmp_path / "editor_imagej.tif"
    tifffile.imwrite(path, _image(), description="ImageJ=1.53t\nunit=inch\n", resolution=(96, 96), metadata=None)
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm is None
    assert any("print setting" in w for w in micrograph.meta["warnings"])


def test_resolution_tags_in_cm_that_look_like_a_microscope_are_used(tmp_path):
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, _image(), resolution=(1e6, 1e6), resolutionunit="CENTIMETER")
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm == pytest.approx(10.0)
    assert micrograph.meta["pixel_size_source"] == "metadata: TIFF resolution"


def test_fei_tags_give_pixel_width_and_flag_the_data_bar(tmp_path):
    path = tmp_path / "fei.tif"
    fei = ("[System]\nSystemType=Helios G4\n[Beam]\nHV=5000\n[Scan]\nPixelWidth=1.5e-09\nDwelltime=1e-06\n"
           "[Image]\nResolutionX=50\nResolutionY=36\n")
    tifffile.imwrite(path, _image((40, 50), np.uint8), extratags=[(34682, "s", 0, fei, True)],
                     resolution=(72, 72), resolutionunit="INCH")
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm == pytest.approx(1.5)
    assert micrograph.meta["pixel_size_source"] == "metadata: FEI"
    assert micrograph.meta["vendor"]["instrument"] == "Helios G4"
    assert micrograph.meta["databar_rows"] == [36, 40]
    assert not any("print setting" in w for w in micrograph.meta["warnings"])


@pytest.mark.parametrize("line, expected_nm", [
    ("Image Pixel Size = 2.5 nm", 2.5), ("Image Pixel Size = 0.31 µm", 310.0),
])
def test_zeiss_tags_give_pixel_size(tmp_path, line, expected_nm):
    path = tmp_path / "zeiss.tif"
    tags = f"0\nAP_IMAGE_PIXEL_SIZE\n{line}\nAP_MAG\nMag = 100 K X\n".encode("latin-1")  # as Zeiss writes µ
    tifffile.imwrite(path, _image((40, 50), np.uint8), extratags=[(34118, "s", 0, tags, True)])
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm == pytest.approx(expected_nm)
    assert micrograph.meta["pixel_size_source"] == "metadata: Zeiss SEM"


def test_olympus_sis_pixel_size_is_read_in_metres():
    # No Olympus file can be written here; the tag dict is what tifffile decodes from one.
    from nanoshape.io import _Notes, _olympus_pixel_size

    notes = _Notes()
    _olympus_pixel_size({"pixelsizex": 6.15e-10, "pixelsizey": 6.15e-10, "cameraname": "Veleta"}, notes)
    assert notes.candidates == [("Olympus SIS", pytest.approx(0.615))]


def test_stack_gives_first_frame_and_a_warning(tmp_path):
    frames = np.stack([_image(seed=s) for s in range(5)])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, frames, photometric="minisblack")
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, frames[0].astype(np.float32))
    assert any("5 frames" in w for w in micrograph.meta["warnings"])
    assert micrograph.meta["shape"] == [5, 40, 50]


def test_imagej_hyperstack_gives_first_frame(tmp_path):
    frames = np.stack([_image(seed=s) for s in range(3)])
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, frames, imagej=True, metadata={"axes": "ZYX", "unit": "nm"}, resolution=(2.0, 2.0))
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, frames[0].astype(np.float32))
    assert micrograph.pixel_size_nm == pytest.approx(0.5)
    assert any("3 frames" in w for w in micrograph.meta["warnings"])


def test_rgb_tiff_with_grey_content_is_the_grey_image(tmp_path):
    grey = _image(dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.stack([grey] * 3, axis=-1), photometric="rgb")
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, grey.astype(np.float32))
    assert micrograph.meta["warnings"] == []


def test_min_is_white_tiff_is_inverted(tmp_path):
    stored = _image(dtype=np.uint8)
    path = tmp_path / "white.tif"
    tifffile.imwrite(path, stored, photometric="miniswhite")
    np.testing.assert_array_equal(read_micrograph(path).pixels, 255.0 - stored.astype(np.float32))


def test_lzw_tiff_is_read(tmp_path):
    # LZW needs imagecodecs in tifffile; without it the reader falls back on Pillow
    pixels = _image(dtype=np.uint16)
    path = tmp_path / "lzw.tif"
    Image.fromarray(pixels).save(path, compression="tiff_lzw")
    np.testing.assert_array_equal(read_micrograph(path).pixels, pixels.astype(np.float32))


def test_some_non_finite_pixels_become_the_median(tmp_path):
    pixels = np.arange(100, dtype=np.float32).reshape(10, 10)
    pixels[2, 3], pixels[5, 5], pixels[0, 0] = np.nan, np.inf, -np.inf
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, pixels)
    micrograph = read_micrograph(path)
    finite = pixels[np.isfinite(pixels)]
    assert np.all(np.isfinite(micrograph.pixels))
    assert micrograph.pixels[2, 3] == micrograph.pixels[0, 0] == np.float32(np.median(finite))
    np.testing.assert_array_equal(micrograph.pixels[np.isfinite(pixels)], finite)
    assert any("3 of 100" in w for w in micrograph.meta["warnings"])


@pytest.mark.parametrize("description, resolution", [
    ("ImageJ=1.53t\nunit=m\n", (1e-3, 1e-3)),  # 1000 m per pixel
    ("ImageJ=1.53t\nunit=nm\n", (1e9, 1e9)),  # 1e-9 nm per pixel
])
def test_nonsensical_metadata_pixel_size_is_ignored_with_a_warning(tmp_path, description, resolution):
    path = tmp_path / "absurd.tif"
    tifffile.imwrite(path, _image(), description=description, resolution=resolution, metadata=None)
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm is None
    assert any("cannot be right" in w for w in micrograph.meta["warnings"])


def test_negative_ome_pixel_size_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "negative.ome.tif"
    tifffile.imwrite(path, _image(), ome=True, metadata={"PhysicalSizeX": -2.0, "PhysicalSizeXUnit": "nm"})
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm is None
    assert any("cannot be right" in w for w in micrograph.meta["warnings"])


def test_reading_a_large_image_keeps_at_most_the_stored_and_the_float_copy(tmp_path):
    pixels = _image((2048, 2048), np.uint16)
    path = tmp_path / "large.tif"
    write_tiff(path, pixels, pixel_size_nm=1.0)
    tracemalloc.start()
    try:
        micrograph = read_micrograph(path)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    float_bytes = micrograph.pixels.nbytes
    assert peak_bytes < float_bytes + pixels.nbytes + float_bytes // 4  # uint16 read + one float32 image


# --------------------------------------------------------------------------- PNG, JPEG, BMP


def test_rgb_png_with_grey_content_equals_the_grey_image(tmp_path):
    grey = _image(dtype=np.uint8)
    path = tmp_path / "grey_rgb.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, grey.astype(np.float32))
    assert micrograph.pixel_size_nm is None and micrograph.meta["warnings"] == []


def test_rgba_png_drops_alpha(tmp_path):
    grey = _image(dtype=np.uint8)
    alpha = np.full_like(grey, 128)
    path = tmp_path / "grey_rgba.png"
    Image.fromarray(np.stack([grey, grey, grey, alpha], axis=-1)).save(path)
    np.testing.assert_array_equal(read_micrograph(path).pixels, grey.astype(np.float32))


def test_true_colour_png_becomes_luminance_with_a_warning(tmp_path):
    rgb = np.stack([_image(dtype=np.uint8, seed=s) for s in range(3)], axis=-1)
    path = tmp_path / "colour.png"
    Image.fromarray(rgb).save(path)
    micrograph = read_micrograph(path)
    expected = rgb.astype(np.float64) @ np.array([0.2125, 0.7154, 0.0721])
    np.testing.assert_allclose(micrograph.pixels, expected, rtol=1e-5)
    assert any("luminance" in w for w in micrograph.meta["warnings"])


def test_16_bit_png_keeps_16_bit_values(tmp_path):
    pixels = _image(dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    micrograph = read_micrograph(path)
    assert pixels.max() > 255
    np.testing.assert_array_equal(micrograph.pixels, pixels.astype(np.float32))


def _write_png_rgb16(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB PNG, which Pillow cannot write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = rgb.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_colour_png_says_it_lost_precision(tmp_path):
    grey = _image(dtype=np.uint16)
    path = tmp_path / "deep_rgb.png"
    _write_png_rgb16(path, np.stack([grey] * 3, axis=-1))
    micrograph = read_micrograph(path)
    np.testing.assert_allclose(micrograph.pixels, grey >> 8, atol=1)
    assert any("8-bit precision" in w for w in micrograph.meta["warnings"])


def test_jpeg_is_read_close_to_what_was_saved(tmp_path):
    grey = np.clip(np.add.outer(np.arange(64) * 3, np.arange(80) * 2), 0, 255).astype(np.uint8)
    path = tmp_path / "micrograph.JPG"
    Image.fromarray(grey).save(path, quality=95)
    micrograph = read_micrograph(path)
    assert micrograph.meta["format"] == "jpeg" and micrograph.pixel_size_nm is None
    assert np.abs(micrograph.pixels - grey).mean() < 2.0


def test_bmp_is_read(tmp_path):
    grey = _image(dtype=np.uint8)
    path = tmp_path / "micrograph.bmp"
    Image.fromarray(grey).save(path)
    np.testing.assert_array_equal(read_micrograph(path).pixels, grey.astype(np.float32))


def test_png_named_tif_is_read_with_a_warning(tmp_path):
    grey = _image(dtype=np.uint8)
    path = tmp_path / "really_a_png.tif"
    Image.fromarray(grey).save(path, format="PNG")
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, grey.astype(np.float32))
    assert micrograph.meta["format"] == "png"
    assert any("PNG although the name ends in .tif" in w for w in micrograph.meta["warnings"])


# --------------------------------------------------------------------------- MRC


def test_mrc_voxel_size_in_angstrom(tmp_path):
    pixels = _image(dtype=np.float32)
    path = tmp_path / "map.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(pixels)
        mrc.voxel_size = 2.5
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, pixels)
    assert micrograph.pixel_size_nm == pytest.approx(0.25)
    assert micrograph.meta["pixel_size_source"] == "metadata: MRC header"


def test_mrc_without_voxel_size_and_stack(tmp_path):
    frames = np.stack([_image(dtype=np.int16, seed=s) for s in range(4)])
    path = tmp_path / "stack.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(frames)
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, frames[0].astype(np.float32))
    assert micrograph.pixel_size_nm is None
    assert any("4 frames" in w for w in micrograph.meta["warnings"])


def test_truncated_mrc_is_an_error(tmp_path):
    path = tmp_path / "cut.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_image(dtype=np.float32))
    path.write_bytes(path.read_bytes()[:2000])
    _assert_error(path, "truncated")


# --------------------------------------------------------------------------- EMD


def _write_velox(path: Path, frames: np.ndarray, pixel_size_m: float) -> None:
    """A minimal Velox EMD: frames (n, H, W) stored as Velox does, (H, W, n), with JSON metadata."""
    import h5py

    metadata = {
        "BinaryResult": {"PixelSize": {"width": str(pixel_size_m), "height": str(pixel_size_m)}, "PixelUnitX": "m",
                         "PixelUnitY": "m", "DetectorIndex": "0", "Offset": {"x": "0", "y": "0"}},
        "Detectors": {"Detector-0": {"DetectorName": "HAADF", "ExposureTime": "1"}},
        "Optics": {"AccelerationVoltage": "200000"}, "Instrument": {"InstrumentModel": "Talos F200X"},
        "Acquisition": {}, "Scan": {"DwellTime": "1e-6", "FrameTime": "2"}, "CustomProperties": {},
    }
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": "11"}).encode()]))
        group = f.create_group("Data/Image/6f2a9c")
        group.create_dataset("Data", data=np.moveaxis(frames, 0, -1))
        group.create_dataset("Metadata", data=np.frombuffer(json.dumps(metadata).encode(), np.uint8)[:, None])


def test_velox_emd_first_frame_and_pixel_size(tmp_path):
    pytest.importorskip("h5py", reason="EMD needs h5py (pip install h5py); not installed here")
    frames = np.stack([_image(seed=s) for s in range(2)])
    path = tmp_path / "haadf.emd"
    _write_velox(path, frames, 2e-10)
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, frames[0].astype(np.float32))
    assert micrograph.pixel_size_nm == pytest.approx(0.2)
    assert micrograph.meta["pixel_size_source"] == "metadata: Velox EMD"
    assert micrograph.meta["vendor"]["voltage_kv"] == pytest.approx(200.0)
    assert any("2 frames" in w for w in micrograph.meta["warnings"])


def test_berkeley_emd(tmp_path):
    pytest.importorskip("h5py", reason="EMD needs h5py (pip install h5py); not installed here")
    from rsciio.emd import file_writer

    pixels = _image(dtype=np.float32)
    axes = [{"name": n, "size": s, "scale": 0.15, "offset": 0.0, "units": "nm", "navigate": False}
            for n, s in zip("yx", pixels.shape)]
    path = tmp_path / "ncem.emd"
    file_writer(str(path), {"data": pixels, "axes": axes, "metadata": {"General": {"title": "t"}, "Signal": {}},
                            "original_metadata": {}})
    micrograph = read_micrograph(path)
    np.testing.assert_array_equal(micrograph.pixels, pixels)
    assert micrograph.pixel_size_nm == pytest.approx(0.15)


def test_emd_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "any.emd"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600))
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now fails
    for name in [m for m in sys.modules if m.startswith("rsciio.emd")]:
        monkeypatch.delitem(sys.modules, name)
    _assert_error(path, "h5py", "pip install")


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    _assert_error(tmp_path / "absent.tif", "not found")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.tif"
    path.touch()
    _assert_error(path, "empty", "0 bytes")


def test_folder_is_not_a_file(tmp_path):
    folder = tmp_path / "images.tif"
    folder.mkdir()
    _assert_error(folder, "folder")


def test_unknown_suffix_lists_the_supported_ones(tmp_path):
    path = tmp_path / "notes.xyz"
    path.write_text("hello")
    error = _assert_error(path, "unsupported", ".xyz")
    assert all(suffix in error.reason for suffix in SUPPORTED_SUFFIXES)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff(tmp_path, compression):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _image((64, 64)), compression=compression)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    _assert_error(path, "truncated", "the file has")


def test_tiff_cut_inside_its_header(tmp_path):
    path = tmp_path / "header.tif"
    tifffile.imwrite(path, _image((64, 64)))
    path.write_bytes(path.read_bytes()[:6])
    _assert_error(path, "TIFF")


def test_truncated_png(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_image((64, 64), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    _assert_error(path, "PNG", "truncated")


def test_garbage_named_tif(tmp_path):
    path = tmp_path / "garbage.tif"
    path.write_bytes(b"this is not an image at all" * 10)
    _assert_error(path, "not a valid TIFF")


def test_not_two_dimensional(tmp_path):
    path = tmp_path / "line.tif"
    tifffile.imwrite(path, np.arange(10, dtype=np.uint8))
    _assert_error(path, "not a 2-D image")


def test_all_pixels_non_finite(tmp_path):
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, np.full((8, 8), np.nan, np.float32))
    _assert_error(path, "NaN or infinite")


@pytest.mark.parametrize("override", [0.0, -1.0, float("nan"), float("inf"), True])
def test_bad_override(tmp_path, override):
    path = tmp_path / "ok.tif"
    write_tiff(path, _image(dtype=np.uint8))
    _assert_error(path, "pixel size", pixel_size_nm=override)


def test_error_pickles_and_reads_well(tmp_path):
    error = MicrographError(tmp_path / "a.tif", "the file is empty (0 bytes)")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == f"{tmp_path / 'a.tif'}: the file is empty (0 bytes)"
    assert copy.path == error.path and copy.reason == error.reason
    assert isinstance(copy, ValueError)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.float16, np.float64, bool])
def test_micrograph_holds_2d_float32_converting_any_real_dtype(tmp_path, dtype):
    values = np.array([[0, 1, 1], [1, 0, 1]]).astype(dtype)
    micrograph = Micrograph(values, None, tmp_path / "a.b.tif", {})
    assert micrograph.pixels.dtype == np.float32 and micrograph.stem == "a.b"
    np.testing.assert_array_equal(micrograph.pixels, values.astype(np.float64))


@pytest.mark.parametrize("pixels", [np.zeros((4, 4, 2)), np.zeros(4), np.zeros((4, 4), complex), np.full((2, 2), "a")])
def test_micrograph_refuses_what_is_not_a_2d_real_image(tmp_path, pixels):
    with pytest.raises(ValueError, match="2-D array of real numbers"):
        Micrograph(pixels, None, tmp_path / "a.tif", {})


# --------------------------------------------------------------------------- find_micrographs


def test_find_micrographs_file_folder_glob_and_empty(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("b.tif", "a.dm4", "C.TIF", "d.png", "notes.txt", "table.csv", ".hidden.tif"):
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "e.tif").write_bytes(b"x")

    assert find_micrographs(folder / "notes.txt") == [folder / "notes.txt"]  # a file is taken as given
    assert find_micrographs(folder) == [folder / n for n in ("C.TIF", "a.dm4", "b.tif", "d.png")]
    assert find_micrographs(str(folder / "*.tif")) == [folder / "b.tif"]
    assert find_micrographs(str(folder / "**" / "*.tif")) == [folder / "b.tif", folder / "sub" / "e.tif"]

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images")
    with pytest.raises(MicrographError, match="no micrographs in this folder"):
        find_micrographs(empty)
    with pytest.raises(MicrographError, match="matches no micrographs"):
        find_micrographs(str(folder / "*.mrc"))
    with pytest.raises(MicrographError, match="no such file or folder"):
        find_micrographs(tmp_path / "absent")


def test_found_files_are_read(tmp_path):
    for i, dtype in enumerate((np.uint8, np.uint16)):
        write_tiff(tmp_path / f"m{i}.tif", _image(dtype=dtype, seed=i), pixel_size_nm=1.5)
    (tmp_path / "log.txt").write_text("not an image")
    micrographs = [read_micrograph(p) for p in find_micrographs(tmp_path)]
    assert [m.stem for m in micrographs] == ["m0", "m1"]
    assert all(m.pixel_size_nm == pytest.approx(1.5) for m in micrographs)


def test_gatan_tiff_calibration_is_read_through_rosettasciio(tmp_path):
    """DigitalMicrograph's TIFF export keeps its calibration in private tags 65003-65010."""
    import tifffile

    path = tmp_path / "gatan.tif"
    image = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    tifffile.imwrite(path, image, resolution=(72.0, 72.0), resolutionunit=tifffile.RESUNIT.INCH,
                     extratags=[(65003, "s", 0, "um", True), (65004, "s", 0, "um", True),
                                (65009, "d", 1, 0.0025, True), (65010, "d", 1, 0.0025, True)])
    micrograph = read_micrograph(path)
    assert micrograph.pixel_size_nm == pytest.approx(2.5)
    assert micrograph.meta["pixel_size_source"] == "metadata: Gatan TIFF (rosettasciio)"
    np.testing.assert_array_equal(micrograph.pixels, image.astype(np.float32))
