"""The archival side of the PDF: PDF/A-3b, results.json as an associated file, stable bytes.

WeasyPrint writes the PDF/A-3b identification (XMP ``pdfaid``), an sRGB output intent, embedded
font subsets and a content-derived file identifier. What is left to us is every clock: the
document dates come from SOURCE_DATE_EPOCH when it is set (the reproducible-builds convention),
and the attachment's dates from the audit's own timestamp, so the same results rendered twice
with the same SOURCE_DATE_EPOCH give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PDF_VARIANT = "pdf/a-3b"
ATTACHMENT_NAME = "results.json"
ATTACHMENT_RELATIONSHIP = "Data"  # ISO 32000-2, 7.11.3: the data the visible content shows


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def render_time(environ: Mapping[str, str] | None = None) -> dt.datetime:
    """SOURCE_DATE_EPOCH (seconds since 1970, UTC) when set, else now; whole seconds, UTC."""
    environ = os.environ if environ is None else environ
    epoch = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            return dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise ValueError(
                f"SOURCE_DATE_EPOCH must be whole seconds since 1970-01-01 UTC; got {epoch!r}"
            ) from None
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def w3c_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _audit_time(results: Mapping[str, Any], fallback: dt.datetime) -> dt.datetime:
    """The audit's own timestamp (results' created_utc), naive UTC as WeasyPrint expects."""
    try:
        moment = dt.datetime.strptime(str(results.get("created_utc")), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        moment = fallback.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _identity(results: Mapping[str, Any]) -> str:
    """What the results are of: a standalone probe is named by its probe id, an audit by its id."""
    if results.get("kind") == "probe":
        return f"probe {results['probe_id']}"
    return f"audit {results['audit_id']}"


def results_attachment(results: Mapping[str, Any], payload: bytes, fallback: dt.datetime):
    """results.json as a PDF/A-3 associated file (AFRelationship /Data)."""
    import weasyprint

    moment = _audit_time(results, fallback)
    return weasyprint.Attachment(
        file_obj=io.BytesIO(payload),
        name=ATTACHMENT_NAME,
        description=f"medaudit results for {_identity(results)}: every number this report shows",
        created=moment,
        modified=moment,
        relationship=ATTACHMENT_RELATIONSHIP,
    )


def _dedupe_associated_files(_document, pdf) -> None:
    """WeasyPrint 70 lists each attachment twice in the catalog's /AF array; keep one of each."""
    associated = pdf.catalog.get("AF")
    if associated:
        unique = list(dict.fromkeys(associated))
        associated.clear()
        associated.extend(unique)


def own_files_fetcher(root: str):  # noqa: ANN201 - a weasyprint.urls.URLFetcher
    """WeasyPrint's fetcher, limited to what medaudit made: files under ``root`` (the templates,
    their CSS and fonts) and data: URLs of PNG or SVG images (the report's plots and example
    images; an SVG's own references go through this fetcher too). Anything else, a web address or
    a file elsewhere, is refused, so a crafted results.json can neither request a URL nor embed
    a local file."""
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    from weasyprint.urls import URLFetcher

    top = Path(root).resolve()

    class OwnFilesFetcher(URLFetcher):
        def fetch(self, url: str, headers: Any = None):  # noqa: ANN202
            scheme = url.split(":", 1)[0].lower()
            if scheme == "data":
                mime = url[5:].split(",", 1)[0].split(";", 1)[0].strip().lower()
                if mime in ("image/png", "image/svg+xml"):
                    return super().fetch(url, headers)
            elif scheme == "file":
                parts = urlsplit(url)
                path = Path(url2pathname(parts.path)).resolve()
                local = parts.netloc in ("", "localhost")  # a host would be looked up
                if local and (path == top or top in path.parents):
                    return super().fetch(url, headers)
            raise ValueError("the report fetches nothing but medaudit's own files")

    return OwnFilesFetcher(allowed_protocols=("file", "data"), allow_redirects=False)


def write_pdf_bytes(html: str, base_url: str, attachment) -> bytes:
    """HTML to PDF/A-3b bytes with one associated file; nothing fetched beyond our own files."""
    import weasyprint

    document = weasyprint.HTML(
        string=html, base_url=base_url, url_fetcher=own_files_fetcher(base_url)
    )
    return document.write_pdf(
        pdf_variant=PDF_VARIANT,
        attachments=[attachment],
        finisher=_dedupe_associated_files,
    )
