"""Faults an unlucky user meets: a full disk, a folder that cannot be written, an internal error
whose text holds a path. Each is one line on stderr, the right exit code, no traceback, and no
patient identifier (the canary below is in every folder name) anywhere medaudit writes."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_builders import tiny_checkpoints
from PIL import Image
from test_data_builders import separable_pngs

from audit import cli
from audit.models.tiny import TinyResNet

CANARY = "ZZPHI4242"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp(f"{CANARY}_patient")
    data = root / f"{CANARY}_scans"
    lines = ["path,label,patient_id"]
    lines += [f"{name},{label},{CANARY}{n}" for n, (name, label) in enumerate(separable_pngs(data))]
    (data / "manifest.csv").write_text("\n".join(lines) + "\n")
    tiny_checkpoints(root)
    return {"root": root, "data": data}


def check(setup: dict[str, Path], out: Path, cache: Path, *more: str) -> list[str]:
    root = setup["root"]
    return [
        "check", str(root / "user.pt"), "--modality", "cxr", "--data", str(setup["data"]),
        "--reference", str(root / "reference.pt"), "--out", str(out), "--cache-dir", str(cache),
        "--confounders", "tag", "--levels", "0,1", "--folds", "2", "--epochs", "1",
        "--max-steps", "1", "--batch-size", "8", "--input-size", "32", "--image-size", "32",
        "--resamples", "100", "--no-report", *more,
    ]  # fmt: skip


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert CANARY not in captured.err + captured.out, "a folder name reached the terminal"
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1, captured.err
    return errors[0]


def no_canary_in(folder: Path) -> None:
    for path in folder.rglob("*"):
        assert CANARY not in path.relative_to(folder).as_posix()
        if path.is_file() and path.suffix in (".json", ".xml", ".txt"):
            assert CANARY not in path.read_text(errors="replace"), path.name


def test_a_full_cache_disk_is_exit_2_naming_the_cache_folder_and_leaves_no_temp(
    setup, tmp_path, monkeypatch, capsys
) -> None:
    import audit.data.cache as cache_module

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "posix_fallocate", full, raising=False)
    out, cache = tmp_path / f"{CANARY}_out", tmp_path / f"{CANARY}_cache"
    assert cli.main(check(setup, out, cache)) == 2
    line = one_line_error(capsys)
    assert line == (
        "medaudit: error: no space left on the disk of the --cache-dir folder; free some space "
        "or choose another folder"
    )
    assert not [p for p in cache.rglob("*.tmp*")], "no temporary file left behind"
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "in_progress" and results["verdict"] is None, "no stale green"
    no_canary_in(out)


def test_a_write_refused_in_out_is_exit_2_naming_the_option_not_the_path(
    setup, tmp_path, monkeypatch, capsys
) -> None:
    from audit.run.store import ResultsStore

    out, cache = tmp_path / f"{CANARY}_out", tmp_path / "cache"

    def refused(self, result, spec) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(out / "runs" / "x.json"))

    monkeypatch.setattr(ResultsStore, "put", refused)
    assert cli.main(check(setup, out, cache)) == 2
    line = one_line_error(capsys)
    assert line == (
        "medaudit: error: permission denied in the --out folder; check that it can be read and "
        "written"
    )


def test_a_cache_folder_that_cannot_be_written_is_refused_before_any_model_loads(
    setup, tmp_path, monkeypatch, capsys
) -> None:
    import audit.commands as commands

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(commands.tempfile, "TemporaryFile", read_only)
    missing_model = tmp_path / "missing.pt"
    argv = check(setup, tmp_path / "out", tmp_path / f"{CANARY}_cache")
    argv[1] = str(missing_model)
    assert cli.main(argv) == 2
    line = one_line_error(capsys)
    assert line == (
        "medaudit: error: the --cache-dir folder cannot be written (Read-only file system); "
        "choose another with --cache-dir"
    ), "refused before the (missing) model was even looked at"
    assert not (tmp_path / "out").exists()


def test_an_internal_error_never_prints_a_path_from_its_text(
    setup, tmp_path, monkeypatch, capsys
) -> None:
    import audit.data.loading as loading

    def broken(choice):
        raise RuntimeError(f"unexpected value in /home/{CANARY}/scan.png\nsecond line")

    monkeypatch.setattr(loading, "load_chosen", broken)
    assert cli.main(check(setup, tmp_path / "out", tmp_path / "cache")) == 4
    line = one_line_error(capsys)
    assert line == (
        "medaudit: internal error (RuntimeError): unexpected value in <path>. Re-run with --debug "
        "for the traceback."
    )


def test_scrubbed_keeps_fractions_and_list_names_and_bounds_the_text() -> None:
    from audit.cli import scrubbed

    assert scrubbed("3/4 of train/val in 'C:\\Users\\x'") == "3/4 of train/val in '<path>'"
    assert len(scrubbed("x" * 5000)) == 200


def test_a_confounder_parameter_that_cannot_work_at_this_size_is_refused_before_any_run(
    setup, tmp_path, capsys
) -> None:
    """A huge tag font used to fail inside every run, leaving no results.json or junit.xml."""
    out = tmp_path / "out"
    argv = check(setup, out, tmp_path / "cache", "--param", "tag.font_size=100000")
    assert cli.main(argv) == 2
    line = one_line_error(capsys)
    assert line.startswith("medaudit: error: the tag box") and "does not fit a 32x32 image" in line
    assert not out.exists(), "refused before the out folder was claimed"


def test_a_misaligned_nih_table_never_echoes_its_values_and_a_latin1_list_is_exit_2(
    tmp_path, capsys
) -> None:
    """A shifted Data_Entry_2017.csv puts patient names in "Finding Labels"; the finding
    message lists NIH's finding names only. A list file that is not UTF-8 is bad input (exit
    2), not an internal error."""
    from test_data_builders import NihRow, make_nih_tree

    rows = [
        NihRow(f"{n:08d}_000.png", f"{CANARY} Smith" if n % 3 else "Atelectasis", n, 40, "F", "PA")
        for n in range(12)
    ]
    root = tmp_path / "nih"
    make_nih_tree(root, rows)
    argv = ["check", str(tmp_path / "model.pt"), "--modality", "cxr", "--data", str(root),
            "--finding", "Effusion", "--dry-run", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert cli.main(argv) == 2
    line = one_line_error(capsys)
    assert "findings in it: Atelectasis; and 1 value(s) that are not NIH finding names" in line
    (root / "test_list.txt").write_bytes("caf\xe9.png\n".encode("latin-1"))
    argv[argv.index("Effusion")] = "Atelectasis"
    assert cli.main(argv) == 2
    assert one_line_error(capsys) == (
        "medaudit: error: test_list.txt is not a UTF-8 text file (NIH's lists hold one image "
        "name per line); re-download it"
    )


def test_a_legacy_pickle_refusal_names_the_global_it_would_import(tmp_path, capsys) -> None:
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"echo {CANARY}",))

    path = tmp_path / "legacy.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": Payload()}, path,
               _use_new_zipfile_serialization=False)  # fmt: skip
    assert cli.main(["inspect", str(path)]) == 2
    line = one_line_error(capsys)
    assert "unpickling it would import posix.system, which can run code" in line or (
        "unpickling it would import nt.system" in line
    )
    assert "--trust-pickle" in line


def test_a_huge_parameter_value_is_never_echoed_whole(tmp_path, capsys) -> None:
    value = "9" * 100_000
    argv = ["check", str(tmp_path / "m.pt"), "--modality", "cxr", "--synthetic",
            "--param", f"tag.font_size={value}", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    assert cli.main(argv) == 2
    line = one_line_error(capsys)
    assert len(line) < 400 and "(100012 characters)" in line


def test_weights_holding_nan_are_refused_before_any_image_is_decoded(
    setup, tmp_path, capsys
) -> None:
    """An all-NaN checkpoint used to train until every run failed."""
    state = TinyResNet(width=8).state_dict()
    state["stem.0.weight"] = torch.full_like(state["stem.0.weight"], float("nan"))
    model = tmp_path / "diverged.pt"
    torch.save(state, model)
    cache = tmp_path / "cache"
    argv = check(setup, tmp_path / "out", cache)
    argv[1] = str(model)
    assert cli.main(argv) == 2
    assert one_line_error(capsys) == (
        "medaudit: error: diverged.pt: 1 weight tensor(s) hold NaN or infinite values; the model "
        "cannot be fine-tuned or scored (was it saved after a diverged training step?)"
    )
    assert not list((cache).rglob("*.npy")), "refused before the data was decoded"


def test_the_probe_refuses_weights_holding_nan_too(tmp_path, capsys) -> None:
    import torchvision

    state = torchvision.models.resnet18(num_classes=1).state_dict()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("inf"))
    model = tmp_path / "shipped.pt"
    torch.save(state, model)
    argv = ["probe", str(model), "--modality", "cxr", "--synthetic", "--out",
            str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "shipped.pt: 1 weight tensor(s) hold NaN or infinite values" in one_line_error(capsys)


def test_the_same_image_under_two_patient_ids_is_flagged_as_a_leak(tmp_path) -> None:
    """One file exported twice under two ids lands on both sides of a split: counted, kept in
    the cache record, and in results.json's data.warnings."""
    from audit.data.loading import SHARED_PIXELS, DataRequest, load_cohort

    rng = np.random.default_rng(1)
    lines = ["path,label,patient_id"]
    for n in range(12):
        pixels = rng.integers(0, 256, (24, 24), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{n}.png")
        lines.append(f"img{n}.png,{n % 2},p{n}")
    lines.append("img3.png,1,someone-else")  # the same file under another patient id
    lines.append("img5.png,1,p5")  # the same file twice for one patient: not a leak
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    request = DataRequest(tmp_path / "manifest.csv", "cxr", cache_dir=tmp_path / "c", image_size=16)
    cohort = load_cohort(request, progress=False)
    assert cohort.warnings == {SHARED_PIXELS: 2}
    again = load_cohort(request, progress=False)  # from the cache record
    assert again.warnings == {SHARED_PIXELS: 2}


@pytest.mark.parametrize(
    "content", [b"PK\x03\x04 not really a zip", b"\x00" * 64, b"", b"\x80\x02}q\x00."]
)
def test_a_model_error_names_the_file_never_its_folder(tmp_path, capsys, content) -> None:
    folder = tmp_path / f"{CANARY}_models"
    folder.mkdir()
    (folder / "model.pt").write_bytes(content)
    for argv in (["inspect", str(folder / "model.pt")], ["inspect", str(folder / "gone.pt")]):
        assert cli.main(argv) == 2
        line = one_line_error(capsys)
        assert "model.pt" in line or "gone.pt" in line


def test_a_dry_run_refuses_an_out_that_is_a_file_without_creating_anything(
    setup, tmp_path, capsys
) -> None:
    out = tmp_path / "out.txt"
    out.write_text("a file where the folder should be")
    argv = check(setup, out, tmp_path / "cache", "--dry-run")
    assert cli.main(argv) == 2
    assert one_line_error(capsys) == "medaudit: error: --out names a file, not a folder"
    nested = check(setup, out / "inside", tmp_path / "cache", "--dry-run")
    assert cli.main(nested) == 2
    assert "a part of its path is a file" in one_line_error(capsys)


def test_an_os_error_that_is_not_the_users_to_fix_stays_an_internal_error(
    setup, tmp_path, monkeypatch, capsys
) -> None:
    """A native library that fails to load is an OSError too; it is not bad input (exit 2)."""
    import audit.data.loading as loading

    def no_library(choice):
        raise OSError("libcudnn.so.9: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(loading, "load_chosen", no_library)
    assert cli.main(check(setup, tmp_path / "out", tmp_path / "cache")) == 4
    assert one_line_error(capsys).startswith("medaudit: internal error (OSError): libcudnn.so.9")


def test_scrubbed_replaces_paths_with_spaces_relative_and_windows_but_keeps_urls() -> None:
    from audit.cli import scrubbed

    assert scrubbed("denied: '/data/John Smith/img 1.png'") == "denied: '<path>'"
    assert scrubbed(r"C:\Users\Jane Doe\x.dcm failed") == "<path> <path> failed"
    assert scrubbed("bad data/Patient_Doe_123/x.png here") == "bad <path> here"
    assert scrubbed("see https://pytorch.org/docs/x.html") == "see https://pytorch.org/docs/x.html"
    assert scrubbed("train/val 3/4 (3, 224) / (4, 5)") == "train/val 3/4 (3, 224) / (4, 5)"


def test_a_checkpoint_above_the_size_limit_is_refused_unread_with_the_flag_named(
    setup, tmp_path, capsys
) -> None:
    """The file's own size, and a zip's declared contents (many members, each too small to be
    a bomb), are held to --max-checkpoint-gib before anything is decompressed."""
    import zipfile

    out = tmp_path / f"{CANARY}_out"
    big = setup["root"] / "user.pt"
    assert cli.main([*check(setup, out, tmp_path / "c"), "--max-checkpoint-gib", "0.00001"]) == 2
    line = one_line_error(capsys)
    assert "is refused unread: the file holds" in line and "--max-checkpoint-gib raises it" in line
    assert big.name in line and CANARY not in line

    many = tmp_path / "many.pt"
    with zipfile.ZipFile(many, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for k in range(10):
            archive.writestr(f"archive/data/{k}", bytes(2 << 20))  # 2 MiB of zeros each
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    assert many.stat().st_size < 1 << 20
    argv = check(setup, out, tmp_path / "c")
    argv[1] = str(many)
    assert cli.main([*argv, "--max-checkpoint-gib", "0.01"]) == 2
    line = one_line_error(capsys)
    assert "its members declare 0.0195 GiB, above the checkpoint limit of 0.01 GiB" in line
    assert cli.main([*argv, "--max-checkpoint-gib", "0"]) == 2
    assert "--max-checkpoint-gib 0.0 is not accepted" in one_line_error(capsys)


def test_a_library_warning_is_one_medaudit_line_without_its_path_or_source() -> None:
    """Pillow and pydicom warn through Python's warnings module, which prints the library's
    file, line and source line; a message naming an image's folder would print it too."""
    import subprocess
    import sys

    script = (
        "import warnings; from audit import cli; cli._configure_logging(False, False); "
        f"warnings.warn('cannot fully read /data/{CANARY}_ward/scan 7.png: truncated', UserWarning)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 1, done.stderr
    assert lines[0].startswith("medaudit: warning (UserWarning): cannot fully read <path>")
    assert CANARY not in done.stderr and "warnings.warn" not in done.stderr


def test_a_file_name_too_long_and_a_folder_loop_are_left_out_and_counted(tmp_path, capsys) -> None:
    """Issue point 1: OSErrors on single files (ENAMETOOLONG, ELOOP) are that file's problem,
    counted by reason; they are never exit 4 with the path, nor do they block the dry run."""
    import os

    data = tmp_path / f"{CANARY}_site"
    separable_pngs(data, n=8)
    rows = ["path,label,patient_id", *[f"img{n}.png,{n % 2},p{n}" for n in range(8)]]
    rows += [f"{CANARY}{'x' * 300}.png,1,pLong", f"{CANARY}_loop/img.png,0,pLoop"]
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    os.symlink(f"{CANARY}_loop", data / f"{CANARY}_loop")  # a folder that is its own link
    code = cli.main(["check", str(setup_model(tmp_path)), "--modality", "cxr", "--data",
                     str(data), "--dry-run", "--json", "--cache-dir", str(tmp_path / "c")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert CANARY not in captured.out + captured.err and "Traceback" not in captured.err
    summary = json.loads(captured.out)
    assert summary["excluded"] == {
        "file or folder that cannot be read": 1,
        "image file not found": 1,
    }


def test_an_nih_image_folder_that_cannot_be_listed_is_counted_not_fatal(
    tmp_path, monkeypatch, caplog
) -> None:
    """Issue point 1: an unreadable images_* folder (root can read anything, so the refusal is
    simulated): its images count as not found and one warning says so, without the path."""
    from pathlib import Path as RealPath

    from test_data_builders import make_nih_tree

    from audit.data.nih import index_images

    root = tmp_path / f"{CANARY}_nih"
    make_nih_tree(root)
    real_iterdir = RealPath.iterdir

    def refusing(self):
        if self.parent.name == "images_002":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(RealPath, "iterdir", refusing)
    with caplog.at_level("WARNING"):
        found = index_images(root)
    assert found and all(p.parent.parent.name == "images_001" for p in found.values())
    assert "1 image folder(s) of the NIH data could not be listed" in caplog.text
    assert CANARY not in caplog.text


def setup_model(folder: Path) -> Path:
    user, _ = tiny_checkpoints(folder / "m")
    return user


def test_a_decoder_process_that_dies_is_exit_2_naming_memory_or_the_cache_disk(
    setup, tmp_path, monkeypatch, capsys
) -> None:
    """Issue point 7: a decoder killed by the kernel (SIGBUS on a full disk, or out of memory)
    broke the pool: "internal error (BrokenProcessPool)". Now one line names both causes."""
    from concurrent.futures.process import BrokenProcessPool

    import audit.data.cache as cache_module

    class DyingPool:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

        def submit(self, *args, **kwargs):
            class Future:
                def result(self):
                    raise BrokenProcessPool("A process in the process pool was terminated abruptly")

            return Future()

    monkeypatch.setattr(cache_module, "ProcessPoolExecutor", DyingPool)
    monkeypatch.setattr(cache_module, "_worker_count", lambda *args, **kwargs: 2)
    out, cache = tmp_path / f"{CANARY}_out", tmp_path / f"{CANARY}_cache"
    assert cli.main(check(setup, out, cache)) == 2
    line = one_line_error(capsys)
    assert (
        "a process decoding the images died (out of memory, or the disk of the --cache-dir" in line
    )
    assert not [p for p in cache.rglob("*.tmp*")], "no temporary file left behind"


@pytest.mark.parametrize("command", ["inspect", "check"])
def test_a_safetensors_header_nested_200k_deep_is_exit_2(setup, tmp_path, capsys, command) -> None:
    """Issue point 8: the header's JSON parser ran out of stack (internal error, exit 4)."""
    import struct

    depth = 200_000
    header = b'{"a":' * depth + b"1" + b"}" * depth
    model = tmp_path / "deep.safetensors"
    model.write_bytes(struct.pack("<Q", len(header)) + header)
    argv = [command, str(model)]
    if command == "check":
        argv = check(setup, tmp_path / "out", tmp_path / "c")
        argv[1] = str(model)
    assert cli.main(argv) == 2
    assert "is not a model checkpoint this tool reads" in one_line_error(capsys)
