"""DICOM reading: real files from pydicom's test data and pydicom-data, and small written ones."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from test_data_builders import write_manifest

from audit.data import dicom
from audit.data.dicom import read_dicom_uint8, read_dicom_values
from audit.data.loading import DataRequest, load_cohort

CXR = {"modality": "cxr", "hu_window": (-1000.0, 400.0)}
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_data() -> Path:
    """pydicom-data's folder, found without pydicom's downloader (no network)."""
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pydicom-data is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def gray_dataset(pixels: np.ndarray, path: Path, **attributes) -> Path:
    """An uncompressed 16-bit grayscale file with the given attributes (frames first if 3-D)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_chest_cr_lossless_encodings_give_identical_pixels() -> None:
    folder = pydicom_data()
    plain, _ = read_dicom_uint8(folder / "RG1_UNCR.dcm", **CXR)
    j2k, _ = read_dicom_uint8(folder / "RG1_J2KR.dcm", **CXR)
    assert plain.shape == (1955, 1841) and plain.dtype == np.uint8
    assert np.array_equal(plain, j2k)


def test_chest_cr_lossy_jpeg2000_is_within_one_grey_level_on_average() -> None:
    folder = pydicom_data()
    plain, _ = read_dicom_uint8(folder / "RG1_UNCR.dcm", **CXR)
    lossy, _ = read_dicom_uint8(folder / "RG1_J2KI.dcm", **CXR)
    assert np.abs(plain.astype(int) - lossy.astype(int)).mean() <= 1.0


def test_chest_cr_monochrome1_is_inverted() -> None:
    folder = pydicom_data()
    for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"):
        ds = pydicom.dcmread(folder / name)
        assert ds.PhotometricInterpretation == "MONOCHROME1"
        stored = ds.pixel_array.astype(float)
        shown, _ = read_dicom_uint8(folder / name, **CXR)
        assert np.corrcoef(stored.ravel()[::53], shown.ravel()[::53])[0, 1] < -0.99


def test_ct_slices_give_hounsfield_units_in_range() -> None:
    hu = read_dicom_values(PYDICOM_FILES / "CT_small.dcm")
    assert -1024 <= hu.min() < -800 and 0 < hu.max() <= 3071
    assert -100 < np.median(hu) < 100  # mostly soft tissue
    enhanced = read_dicom_values(pydicom_data() / "eCT_Supplemental.dcm")  # rescale in groups
    assert enhanced.min() == -1024 and enhanced.max() < 3071


def test_ct_window_maps_the_documented_hu_range_to_grey() -> None:
    hu = read_dicom_values(PYDICOM_FILES / "CT_small.dcm")
    grey, _ = read_dicom_uint8(
        PYDICOM_FILES / "CT_small.dcm", modality="ct", hu_window=(-1000.0, 400.0)
    )
    expected = np.clip(np.rint((hu + 1000.0) / 1400.0 * 255.0), 0, 255)
    assert np.array_equal(grey, expected.astype(np.uint8))


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_compressed_transfer_syntaxes_decode_to_the_same_pixels(name: str) -> None:
    plain, _ = read_dicom_uint8(PYDICOM_FILES / "MR_small.dcm", **CXR)
    packed, _ = read_dicom_uint8(PYDICOM_FILES / name, **CXR)
    assert np.array_equal(plain, packed)


def test_jpeg_lossless_process_14_decodes_where_gdcm_is_installed() -> None:
    pytest.importorskip("gdcm")
    image, _ = read_dicom_uint8(pydicom_data() / "JPEG-LL.dcm", **CXR)
    assert image.shape == (1024, 256) and image.std() > 0


def test_window_centre_width_applies_after_rescale(tmp_path: Path) -> None:
    pixels = np.array([[0, 50, 100], [150, 200, 300]], dtype=np.uint16)
    path = gray_dataset(
        pixels,
        tmp_path / "w.dcm",
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=100,
        WindowWidth=201,
    )
    image, _ = read_dicom_uint8(path, **CXR)
    rescaled = pixels * 2.0 - 100
    expected = np.clip((rescaled - 99.5) / 200 + 0.5, 0, 1) * 255
    assert np.array_equal(image, np.rint(expected).astype(np.uint8))


def test_voi_lut_sequence_is_used_before_the_window(tmp_path: Path) -> None:
    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 8]
    lut.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUT Data
    pixels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    path = gray_dataset(
        pixels, tmp_path / "lut.dcm", VOILUTSequence=[lut], WindowCenter=10, WindowWidth=2
    )
    image, _ = read_dicom_uint8(path, **CXR)
    assert np.array_equal(image, (255 - pixels).astype(np.uint8))


def test_monochrome1_without_window_is_inverted_over_its_range(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    path = gray_dataset(pixels, tmp_path / "m1.dcm", PhotometricInterpretation="MONOCHROME1")
    image, _ = read_dicom_uint8(path, **CXR)
    assert image[0, 0] == 255 and image[1, 1] == 0


def test_multi_frame_gives_the_middle_frame_or_the_one_asked(tmp_path: Path) -> None:
    frames = np.stack([np.full((4, 4), 100 * k, dtype=np.uint16) for k in range(1, 4)])
    path = gray_dataset(frames, tmp_path / "mf.dcm")
    assert read_dicom_values(path).max() == 200
    assert read_dicom_values(path, frame=0).max() == 100
    assert read_dicom_values(path, frame=2).max() == 300


def test_burned_in_annotation_is_counted_as_a_warning(tmp_path: Path) -> None:
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    rows = []
    for i, flag in enumerate(["YES", "NO", None, "YES"]):
        extra = {} if flag is None else {"BurnedInAnnotation": flag}
        gray_dataset(pixels + i, tmp_path / f"{i}.dcm", **extra)
        rows.append({"path": f"{i}.dcm", "label": str(i % 2), "patient_id": f"P{i}"})
    write_manifest(tmp_path / "manifest.csv", rows)
    cohort = load_cohort(
        DataRequest(tmp_path / "manifest.csv", "cxr", cache_dir=tmp_path / "c", image_size=16),
        progress=False,
    )
    burned = {k: v for k, v in cohort.warnings.items() if k.startswith("BurnedIn")}
    assert burned == {dicom.BURNED_IN_YES: 2, dicom.BURNED_IN_UNSTATED: 1}
    assert cohort.excluded == {}


def test_window_functions_follow_the_standard() -> None:
    values = np.array([0.0, 50.5, 100.0, 150.5, 200.0])
    linear = dicom.window(values, 100.0, 101.0)
    assert linear[0] == 0 and linear[-1] == 1 and abs(linear[2] - 0.505) < 1e-3
    exact = dicom.window(values, 100.0, 100.0, "LINEAR_EXACT")
    assert exact[1] == pytest.approx(0.005) and exact[2] == pytest.approx(0.5)
    sigmoid = dicom.window(values, 100.0, 100.0, "SIGMOID")
    assert sigmoid[2] == pytest.approx(0.5) and sigmoid[0] < 0.02


# What a user sees: the reading runs in its own process, with logging set up as the CLI sets it
# up, and everything it prints or writes is searched. (caplog is no witness: pytest 9.2 attaches its
# handler to loggers that do not propagate, so it sees records that no user ever does.)
_READ_TRUNCATED_DICOM = """
import logging, sys
from pathlib import Path
from audit.cli import _configure_logging
from audit.data.dicom import read_dicom_uint8
from audit.data.problems import Unreadable
_configure_logging(debug=True, quiet=False)  # the most talkative setting a user can choose
if sys.argv[2] == "unsilenced":
    logging.getLogger("pydicom").propagate = True  # undo medaudit's silencing
try:
    read_dicom_uint8(Path(sys.argv[1]), modality="ct", hu_window=(-1000.0, 400.0))
except Unreadable as error:
    print(f"left out: {error}")
    logging.getLogger("audit").warning("left out: %s", error)
"""


def _read_truncated_dicom_in_a_process(tmp_path: Path, silencing: str) -> str:
    """All a user could see: stdout, stderr and every file the process wrote in its folder."""
    import subprocess
    import sys

    from pydicom.uid import RLELossless
    from test_data_builders import Identity, ct_dataset, save_dataset

    ds = ct_dataset(Identity(), series_uid=generate_uid(), z=0.0, hu=np.zeros((32, 32)))
    ds.compress(RLELossless)
    path = save_dataset(ds, tmp_path / "ward-DOE_JOHN_MRN123" / "slice.dcm")
    path.write_bytes(path.read_bytes()[:-200])  # pydicom then logs the file by its full path
    workdir = tmp_path / "work"
    workdir.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _READ_TRUNCATED_DICOM, str(path), silencing],
        cwd=workdir, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "left out:" in done.stdout  # the file was read and refused, so pydicom did log
    written = [f.read_text(errors="replace") for f in workdir.rglob("*") if f.is_file()]
    return "\n".join([done.stdout, done.stderr, *written])


def test_pydicom_own_log_records_never_reach_the_user(tmp_path) -> None:
    """pydicom logs a truncated encapsulated file by its full path; the folder may be a name."""
    seen = _read_truncated_dicom_in_a_process(tmp_path, "silenced")
    assert "DOE_JOHN" not in seen and str(tmp_path) not in seen
    assert "found in file" not in seen, "pydicom's own record never reaches the terminal"


def test_without_the_silencing_pydicom_would_print_the_path(tmp_path) -> None:
    """The companion that keeps the test above honest: the same reading, pydicom's logger allowed
    to propagate, does show the identifier (so the silencing is what keeps it out)."""
    seen = _read_truncated_dicom_in_a_process(tmp_path, "unsilenced")
    assert "found in file" in seen, "pydicom's record, path and all, reaches the handler"
    # medaudit's log formatter still cuts any word over 80 characters (a long path among them),
    # so the identifier shows only where the path is short enough to print whole.
    assert "DOE_JOHN_MRN123" in seen or str(tmp_path)[:40] in seen


def test_a_slice_header_never_shows_the_patient_id() -> None:
    header = dicom.SliceHeader("1.2.3", "1.2.4", 0.0, "CT", "DOE_JOHN_MRN123", "M")
    assert "DOE_JOHN" not in repr(header) and header.patient_id == "DOE_JOHN_MRN123"
