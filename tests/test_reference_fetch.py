"""`medaudit reference fetch/list` against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torchvision import models

from audit import cli
from audit.models.fetch import cached_reference, how_to_get_reference
from audit.models.tiny import TinyResNet

NAME = "reference.pt"  # a small stand-in reference (about 1.3 MB)
BREAK_AFTER = 100_000
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


@dataclass
class Site:
    """What the test server serves, how it misbehaves, and what it was asked."""

    files: dict[str, bytes]
    broken_requests: int = 0  # the first N requests send BREAK_AFTER bytes, then hang up
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


def handler_for(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            site.seen.append((self.path, self.headers.get("Range")))
            body = site.files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            start = self._range_start()
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if len(site.seen) <= site.broken_requests:
                payload = payload[:BREAK_AFTER]
                self.close_connection = True
            self.wfile.write(payload)

        def _range_start(self) -> int:
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            return int(match.group(1)) if match else 0

    return Handler


def saved(weights: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def reference_bytes() -> bytes:
    return saved(TinyResNet(width=32).state_dict())


@pytest.fixture(scope="module")
def resnet18_bytes() -> bytes:
    """A torchvision ResNet18 state_dict without its classifier, as the mirror's file is."""
    weights = models.resnet18(weights=None).state_dict()
    return saved({k: v for k, v in weights.items() if not k.startswith("fc.")})


@pytest.fixture()
def site(reference_bytes: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Site]:
    for name in PROXY_VARIABLES:  # a proxy must never see these requests
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.chdir(tmp_path)  # no settings file unless a test writes one
    served = Site({NAME: reference_bytes, "junk.pt": b"not a model at all\n"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(served))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    served.url = f"http://127.0.0.1:{port}"
    yield served
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def medaudit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fetch(site: Site, cache: Path, capsys, *extra: str, name: str = NAME) -> tuple[int, str, str]:
    argv = ["reference", "fetch", "--url", f"{site.url}/{name}", "--cache-dir", str(cache)]
    return medaudit([*argv, *extra], capsys)


def one_line_error(err: str) -> str:
    assert err.startswith("medaudit: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_fetch_downloads_verifies_loads_and_records_the_reference(
    site: Site, tmp_path: Path, resnet18_bytes: bytes, capsys
) -> None:
    site.files["ResNet18.pt"] = resnet18_bytes
    cache = tmp_path / "cache"
    code, out, _ = fetch(site, cache, capsys, name="ResNet18.pt")
    assert code == 0
    folder = cache / "references"
    assert (folder / "ResNet18.pt").read_bytes() == resnet18_bytes
    assert sorted(p.name for p in folder.iterdir()) == ["ResNet18.pt", "index.json"]  # no .part
    sha256 = hashlib.sha256(resnet18_bytes).hexdigest()
    entry = json.loads((folder / "index.json").read_text())["ResNet18.pt"]
    assert entry["url"] == f"{site.url}/ResNet18.pt"
    assert (entry["sha256"], entry["bytes"]) == (sha256, len(resnet18_bytes))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["fetched_utc"])
    assert (entry["layout"], entry["arch"]) == ("radimagenet-hf", "resnet18")
    assert "radimagenet-hf (resnet18)" in out and sha256 in out
    assert f'reference_sha256 = "{sha256}"' in out  # how to pin it
    assert site.seen == [("/ResNet18.pt", None)]
    assert cached_reference(cache) == folder / "ResNet18.pt"


def test_broken_download_resumes_with_a_range_request(
    site: Site, tmp_path: Path, reference_bytes: bytes, capsys
) -> None:
    site.broken_requests = 1
    code, _, err = fetch(site, tmp_path / "cache", capsys)
    assert code == 0, err
    assert site.seen == [(f"/{NAME}", None), (f"/{NAME}", f"bytes={BREAK_AFTER}-")]
    assert (tmp_path / "cache" / "references" / NAME).read_bytes() == reference_bytes


def test_download_that_keeps_breaking_is_kept_and_the_next_run_resumes(
    site: Site, tmp_path: Path, reference_bytes: bytes, capsys
) -> None:
    site.broken_requests = 3
    code, _, err = fetch(site, tmp_path / "cache", capsys)
    assert code == 2
    assert "next run resumes" in one_line_error(err.splitlines()[-1] + "\n")
    folder = tmp_path / "cache" / "references"
    (part,) = folder.glob("*.part")
    assert part.stat().st_size == 3 * BREAK_AFTER and not (folder / NAME).exists()

    code, _, _ = fetch(site, tmp_path / "cache", capsys)
    assert code == 0
    assert site.seen[-1] == (f"/{NAME}", f"bytes={3 * BREAK_AFTER}-")
    assert (folder / NAME).read_bytes() == reference_bytes and not part.exists()


@pytest.mark.parametrize("pinned_by", ["flag", "config"])
def test_file_with_another_sha256_is_refused_and_nothing_is_left(
    site: Site, tmp_path: Path, capsys, pinned_by: str
) -> None:
    wrong = "ab" * 32
    extra = ["--sha256", wrong] if pinned_by == "flag" else []
    if pinned_by == "config":
        (tmp_path / "medaudit.toml").write_text(f'reference_sha256 = "{wrong}"\n')
    code, _, err = fetch(site, tmp_path / "cache", capsys, *extra)
    assert code == 2
    message = one_line_error(err)
    assert wrong in message and "removed" in message
    assert ("--sha256" if pinned_by == "flag" else "reference_sha256 in medaudit.toml") in message
    assert list((tmp_path / "cache" / "references").iterdir()) == []


def test_matching_sha256_from_pyproject_is_accepted(
    site: Site, tmp_path: Path, reference_bytes: bytes, capsys
) -> None:
    sha256 = hashlib.sha256(reference_bytes).hexdigest()
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.medaudit]\nreference_sha256 = "{sha256.upper()}"\n'
    )
    code, out, _ = fetch(site, tmp_path / "cache", capsys)
    assert code == 0
    assert f"sha256:    {sha256}\n" in out and "pin it" not in out


def test_malformed_sha256_names_the_flag(site: Site, tmp_path: Path, capsys) -> None:
    code, _, err = fetch(site, tmp_path / "cache", capsys, "--sha256", "1234")
    assert code == 2 and "--sha256 '1234'" in one_line_error(err)
    assert site.seen == []


def test_server_404_is_one_line_exit_2(site: Site, tmp_path: Path, capsys) -> None:
    code, _, err = fetch(site, tmp_path / "cache", capsys, name="missing.pt")
    assert code == 2
    message = one_line_error(err)
    assert "HTTP 404" in message and "--url" in message and "--reference PATH" in message
    assert not (tmp_path / "cache" / "references" / "missing.pt").exists()


def test_file_that_is_not_a_reference_is_removed(site: Site, tmp_path: Path, capsys) -> None:
    code, _, err = fetch(site, tmp_path / "cache", capsys, name="junk.pt")
    assert code == 2 and "does not load as a reference" in one_line_error(err)
    assert list((tmp_path / "cache" / "references").iterdir()) == []


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/x.pt", "ResNet50.pt"])
def test_only_http_addresses_are_fetched(tmp_path: Path, capsys, url: str) -> None:
    code, _, err = medaudit(
        ["reference", "fetch", "--url", url, "--cache-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "--reference PATH" in one_line_error(err)


def test_second_fetch_reuses_the_cached_file(site: Site, tmp_path: Path, capsys) -> None:
    assert fetch(site, tmp_path / "cache", capsys)[0] == 0
    code, out, _ = fetch(site, tmp_path / "cache", capsys)
    assert code == 0 and "already cached" in out
    assert len(site.seen) == 1


def test_reference_list_shows_name_layout_sha256_and_size(
    site: Site, tmp_path: Path, reference_bytes: bytes, capsys
) -> None:
    cache = tmp_path / "cache"
    code, out, _ = medaudit(["reference", "list", "--cache-dir", str(cache)], capsys)
    assert code == 0 and "no references cached" in out and "medaudit reference fetch" in out
    assert fetch(site, cache, capsys)[0] == 0
    code, out, _ = medaudit(["reference", "list", "--cache-dir", str(cache)], capsys)
    assert code == 0
    (row,) = [line for line in out.splitlines() if line.startswith(NAME)]
    assert "radimagenet-hf (tiny-resnet)" in row
    assert hashlib.sha256(reference_bytes).hexdigest() in row
    assert f"{len(reference_bytes) / 1e6:.1f} MB" in row


def test_cached_reference_skips_a_file_that_changed(site: Site, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    assert cached_reference(cache) is None
    assert fetch(site, cache, capsys)[0] == 0
    path = cache / "references" / NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cached_reference(cache) is None


def test_how_to_get_reference_names_both_ways_on_one_line() -> None:
    text = how_to_get_reference()
    assert "medaudit reference fetch" in text and "`reference` PATH" in text
    assert "\n" not in text
