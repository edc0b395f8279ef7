"""Miniature data sets on disk, laid out as the real ones: NIH ChestX-ray14, the study's preset,
LIDC-IDRI (DICOM slices written with pydicom plus an XML reading session) and a manifest.

Imported by the other ``test_data_*`` modules; the tests here check the builders themselves.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
NIH_FINDINGS = ("Atelectasis", "No Finding", "Effusion|Atelectasis", "Effusion", "No Finding")


def write_png(path: Path, seed: int, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)


def separable_pngs(folder: Path, n: int = 40, size: int = 32, name: str = "img{n}.png") -> list:
    """``n`` PNGs whose brightness follows the label (alternating 0, 1): a tiny audit learns
    something from them. Returns (file name, label) per image, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    made = []
    for k in range(n):
        label = k % 2
        pixels = rng.normal(110 + 30 * label, 25, (size, size)).clip(0, 255).astype(np.uint8)
        file_name = name.format(n=k)
        Image.fromarray(pixels).save(folder / file_name)
        made.append((file_name, label))
    return made


@dataclass
class NihRow:
    name: str
    findings: str
    patient: int
    age: int
    sex: str
    view: str
    follow_up: int = 0

    def csv_fields(self) -> list[str]:
        return [
            self.name,
            self.findings,
            str(self.follow_up),
            str(self.patient),
            str(self.age),
            self.sex,
            self.view,
            "1024",
            "1024",
            "0.143",
            "0.143",
        ]


def nih_rows(n_patients: int = 16, per_patient: int = 3) -> list[NihRow]:
    rows = []
    for patient in range(1, n_patients + 1):
        for k in range(per_patient):
            findings = NIH_FINDINGS[(patient + k) % len(NIH_FINDINGS)]
            view = "AP" if k == per_patient - 1 else "PA"
            sex = "F" if patient % 2 else "M"
            rows.append(
                NihRow(f"{patient:08d}_{k:03d}.png", findings, patient, 20 + patient, sex, view, k)
            )
    return rows


def write_data_entry(root: Path, rows: list[NihRow]) -> None:
    with open(root / "Data_Entry_2017.csv", "w", newline="") as handle:
        handle.write(NIH_HEADER + "\n")
        for row in rows:
            handle.write(",".join(row.csv_fields()) + "\n")


def make_nih_tree(
    root: Path, rows: list[NihRow] | None = None, *, nested: bool = True, test_from: int = 13
) -> list[NihRow]:
    """Data_Entry_2017.csv, PNGs (``images_001/images`` + ``images_002/images`` or ``images/``),
    and the official lists: patients numbered ``test_from`` and up form the test list."""
    rows = nih_rows() if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    write_data_entry(root, rows)
    for i, row in enumerate(rows):
        folder = (root / f"images_{1 + i % 2:03d}" / "images") if nested else root / "images"
        write_png(folder / row.name, seed=i)
    test = [r.name for r in rows if r.patient >= test_from]
    train = [r.name for r in rows if r.patient < test_from]
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    return rows


def make_preset_tree(root: Path) -> None:
    """Tiny PNGs under exactly the study's file names, and a Data_Entry_2017.csv naming them."""
    from audit.data.study_lists import load_study_lists

    lists = load_study_lists()
    by_name: dict[str, NihRow] = {}
    for image in (*lists.sex, *lists.chest14):  # the sex lists' sex wins
        if image.name in by_name:
            continue
        sex = image.sex or ("F" if int(image.patient) % 2 else "M")
        findings = "Atelectasis" if image.label else "No Finding"
        by_name[image.name] = NihRow(image.name, findings, int(image.patient), 50, sex, "PA")
    rows = list(by_name.values())
    root.mkdir(parents=True, exist_ok=True)
    write_data_entry(root, rows)
    images = root / "images"
    images.mkdir(exist_ok=True)
    tiny = np.zeros((8, 8), dtype=np.uint8)
    for i, row in enumerate(rows):
        tiny[:] = i % 251
        Image.fromarray(tiny).save(images / row.name)


# --- DICOM and LIDC -----------------------------------------------------------------------------


@dataclass
class Identity:
    """What a slice says about its patient; the canary test puts a marker in each field."""

    patient_id: str = "LIDC-IDRI-0001"
    name: str = "Anonymous^Patient"
    birth_date: str = "19500101"
    accession: str = "ACC0001"
    sex: str = "M"


def ct_dataset(
    identity: Identity, *, series_uid: str, z: float, hu: np.ndarray, sop_uid: str | None = None
) -> Dataset:
    """A CT Image Storage dataset with signed pixels and rescale intercept -1024."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.1.")
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientID = identity.patient_id
    ds.PatientName = identity.name
    ds.PatientBirthDate = identity.birth_date
    ds.AccessionNumber = identity.accession
    ds.PatientSex = identity.sex
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = (hu.astype(np.int32) + 1024).astype("<i2").tobytes()
    return ds


def save_dataset(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Nodule:
    """A nodule outlined by some readers on consecutive slices. ``ratings`` None: under 3 mm."""

    slices: tuple[int, ...]
    ratings: tuple[int, ...] | None


@dataclass
class LidcScan:
    identity: Identity
    n_slices: int = 60
    spacing: float = 2.5
    nodules: list[Nodule] = field(default_factory=list)
    non_nodules: tuple[int, ...] = ()
    sop_uids: list[str] = field(default_factory=list)
    series_uid: str = ""


def default_scan(identity: Identity | None = None) -> LidcScan:
    """A malignant nodule (ratings 4, 3, 4) on slices 20-22, a nodule under 3 mm on 30, a benign one
    (1, 2) on 40-41, a non-nodule on 45: 3 positive slices; nodule-free negatives lie 4+ slices
    (10 mm) from all of them and 6 slices from either end."""
    return LidcScan(
        identity or Identity(),
        nodules=[Nodule((20, 21, 22), (4, 3, 4)), Nodule((30,), None), Nodule((40, 41), (1, 2))],
        non_nodules=(45,),
    )


def write_lidc_scan(root: Path, scan: LidcScan, folder_name: str | None = None) -> Path:
    """``root/<PatientID>/<study>/<series>/`` with one DICOM per slice and one XML file."""
    folder = root / (folder_name or scan.identity.patient_id) / "01-01-2000-study" / "3000-series"
    scan.series_uid = generate_uid()
    scan.sop_uids = []
    rng = np.random.default_rng(sum(scan.identity.patient_id.encode()))
    for index in range(scan.n_slices):
        hu = rng.integers(-1000, 400, (32, 32)).astype(np.int32)
        z = -index * scan.spacing
        ds = ct_dataset(scan.identity, series_uid=scan.series_uid, z=z, hu=hu)
        scan.sop_uids.append(ds.SOPInstanceUID)
        save_dataset(ds, folder / f"1-{index + 1:03d}.dcm")
    (folder / "069.xml").write_text(lidc_xml(scan), encoding="utf-8")
    return folder


def lidc_xml(scan: LidcScan) -> str:
    def roi(index: int) -> str:
        return (
            f"<roi><imageZposition>{-index * scan.spacing:.6f}</imageZposition>"
            f"<imageSOP_UID>{scan.sop_uids[index]}</imageSOP_UID><inclusion>TRUE</inclusion>"
            "<edgeMap><xCoord>10</xCoord><yCoord>12</yCoord></edgeMap></roi>"
        )

    sessions = []
    n_readers = max([len(n.ratings) for n in scan.nodules if n.ratings] or [1])
    for reader in range(max(n_readers, 1)):
        parts = [
            f"<annotationVersion>3.12</annotationVersion><servicingRadiologistID>{reader}"
            "</servicingRadiologistID>"
        ]
        for number, nodule in enumerate(scan.nodules):
            if nodule.ratings is not None and reader >= len(nodule.ratings):
                continue
            if nodule.ratings is None and reader > 0:
                continue
            characteristics = (
                ""
                if nodule.ratings is None
                else "<characteristics><subtlety>4</subtlety><malignancy>"
                f"{nodule.ratings[reader]}</malignancy></characteristics>"
            )
            rois = "".join(roi(i) for i in nodule.slices)
            parts.append(
                f"<unblindedReadNodule><noduleID>Nodule {number:03d}</noduleID>"
                f"{characteristics}{rois}</unblindedReadNodule>"
            )
        if reader == 0:
            for index in scan.non_nodules:
                parts.append(
                    f"<nonNodule><nonNoduleID>N{index}</nonNoduleID><imageZposition>"
                    f"{-index * scan.spacing:.6f}</imageZposition><imageSOP_UID>"
                    f"{scan.sop_uids[index]}</imageSOP_UID><locus><xCoord>5</xCoord>"
                    "<yCoord>5</yCoord></locus></nonNodule>"
                )
        sessions.append(f"<readingSession>{''.join(parts)}</readingSession>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<LidcReadMessage uid="1.1" xmlns="http://www.nih.gov" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<ResponseHeader><Version>1.8.1</Version><TaskDescription>Second unblinded read"
        f"</TaskDescription><SeriesInstanceUid>{scan.series_uid}</SeriesInstanceUid>"
        "<ResponseDescription>1 - Reading complete</ResponseDescription></ResponseHeader>"
        f"{''.join(sessions)}</LidcReadMessage>\n"
    )


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else ["path", "label", "patient_id"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- the builders themselves --------------------------------------------------------------------


def test_nih_builder_writes_the_official_columns(tmp_path: Path) -> None:
    make_nih_tree(tmp_path, nih_rows(2, 2))
    header = (tmp_path / "Data_Entry_2017.csv").read_text().splitlines()[0]
    assert header.startswith("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age")
    assert len(list(tmp_path.glob("images_00*/images/*.png"))) == 4


def test_lidc_builder_writes_readable_slices_and_session(tmp_path: Path) -> None:
    scan = default_scan()
    folder = write_lidc_scan(tmp_path, scan)
    first = pydicom.dcmread(folder / "1-001.dcm")
    assert first.Modality == "CT" and first.SeriesInstanceUID == scan.series_uid
    assert (first.pixel_array.astype(int) - 1024).min() >= -1000
    assert "LidcReadMessage" in (folder / "069.xml").read_text()
