"""Named text datasets, downloaded on demand into a local cache and verified before use.

``dataset_path("tinyshakespeare")`` returns the path of the cached file, downloading it first if it is not
cached; the file is then read like any other text (``TextData(path)``, ``neural-memory train --text``, or
``neural-memory train --dataset NAME`` directly).

**Cache.** ``$NEURAL_MEMORY_CACHE`` if set, else ``~/.cache/neural-memory/datasets`` (or the ``cache_dir``
argument, ``--cache-dir`` on the command line). It holds one file per dataset (``NAME.txt``) and
``manifest.json``: per dataset the file, its size and SHA-256, the URL it came from, the size and SHA-256 of
the download itself (the zip archive for enwik8 and wikitext-103), where that digest came from, and when.

**Download.** Streamed with :mod:`urllib.request` into ``NAME.part`` (a tqdm bar on a terminal). An
interrupted download keeps ``NAME.part`` and the next call resumes it with an HTTP ``Range`` request (with
``If-Range`` when the server gave an ``ETag`` or ``Last-Modified``; a server that ignores the range and
answers ``200`` is read again from byte 0). The complete download is checked (size, SHA-256), the member is
extracted from a zip archive if the dataset is one, and only then is the file moved into place with
:func:`os.replace` and recorded in the manifest. A wrong size or digest raises
:class:`DatasetIntegrityError` and deletes the download: nothing of that dataset is left in the cache.

**Which digest is checked.**

- ``tinyshakespeare`` has a SHA-256 in the registry below; every download must match it.
- ``enwik8`` and ``wikitext-103`` have none: no digest of those files is published by their hosts, and this
  project could not download them to compute one (no placeholder is written instead). Their *first*
  download is trusted: its size is checked where it is known, its SHA-256 is computed, printed, and pinned
  in ``manifest.json``; every later download into that cache must match the pinned digest (trust on first
  use). This protects against a file that changes later, **not** against a first download that was already
  wrong, and enwik8's URL is plain ``http``. To check the first download yourself, pass the digest you
  trust as ``expected_sha256`` (``--sha256`` on the command line); it is the SHA-256 of the downloaded file
  (the ``.zip``), as ``sha256sum`` prints it.
- Every use of a cached file (every :func:`dataset_path` call) re-hashes it against the manifest: a file
  changed in the cache is refused (and deleted).

**Test servers and mirrors.** The URL of dataset ``NAME`` is replaced by the environment variable
``NEURAL_MEMORY_DATASET_URL_<NAME>`` (``NAME`` upper-cased, every character other than a letter or digit
replaced by ``_``: ``NEURAL_MEMORY_DATASET_URL_WIKITEXT_103``). The digests above still apply: a mirror
must serve the same bytes.

Concurrent processes (e.g. the ranks of ``torchrun``) take turns through an ``fcntl`` lock on
``CACHE/.lock``, so one downloads and the others find the file cached (no lock where ``fcntl`` is missing).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "NEURAL_MEMORY_CACHE"
URL_ENV_PREFIX = "NEURAL_MEMORY_DATASET_URL_"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
LOCK_NAME = ".lock"
CHUNK_BYTES = 1 << 16
TIMEOUT_SECONDS = 60.0

# where the digest a download was checked against came from (manifest "digest_source")
FROM_REGISTRY = "registry"
FROM_FIRST_DOWNLOAD = "trust on first use"
FROM_USER = "expected_sha256"

_HEX64 = re.compile(r"[0-9a-f]{64}")


class DatasetIntegrityError(ValueError):
    """A download or a cached file whose size or SHA-256 is not the expected one."""


class DownloadError(ConnectionError):
    """A download that could not be completed (network error, HTTP error status, connection closed early)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset.

    Attributes:
        name: the name used by :func:`dataset_path` and ``--dataset``.
        url: where it is downloaded from.
        member: the file inside the downloaded zip archive that is the dataset, or ``None`` when the download
            is the text itself.
        size: bytes of the download (the archive when ``member`` is set), ``None`` if unknown.
        sha256: SHA-256 of the download (lower-case hex), ``None`` if unknown: then the first download is
            trusted and pinned (see the module docstring).
        description: one line on what the text is.
        license: one line on its licence.
        member_size: bytes of the extracted member, ``None`` if unknown.
    """

    name: str
    url: str
    member: str | None
    size: int | None
    sha256: str | None
    description: str
    license: str
    member_size: int | None = None

    def __post_init__(self) -> None:
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")

    @property
    def file_name(self) -> str:
        """The name of the cached file in the cache directory."""
        return f"{self.name}.txt"

    @property
    def text_size(self) -> int | None:
        """Bytes of the cached text file, ``None`` if unknown."""
        return self.member_size if self.member is not None else self.size


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="tinyshakespeare",
            url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            member=None,
            size=1_115_394,
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            description="Tiny Shakespeare: ~40,000 lines of Shakespeare's plays (char-rnn, A. Karpathy)",
            license="Shakespeare's text is in the public domain; char-rnn is MIT-licensed",
        ),
        DatasetSpec(
            name="enwik8",
            url="http://mattmahoney.net/dc/enwik8.zip",
            member="enwik8",
            size=36_445_475,
            sha256=None,  # not published; pinned on first download (trust on first use)
            description="enwik8: the first 10^8 bytes of an English Wikipedia XML dump (Hutter Prize)",
            license="Wikipedia text: CC BY-SA / GFDL (see mattmahoney.net/dc/textdata.html)",
            member_size=100_000_000,
        ),
        DatasetSpec(
            name="wikitext-103",
            url="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-raw-v1.zip",
            member="wikitext-103-raw/wiki.train.raw",
            size=None,
            sha256=None,  # not published; pinned on first download (trust on first use)
            description="WikiText-103 (raw, Merity et al. 2016): the training split wiki.train.raw only",
            license="CC BY-SA 3.0 (Wikipedia Good and Featured articles)",
        ),
    )
}


def available_datasets() -> tuple[str, ...]:
    """The names of the registered datasets."""
    return tuple(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available datasets: {', '.join(available_datasets())}")
    return DATASETS[name]


def cache_directory(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$NEURAL_MEMORY_CACHE``, else ``~/.cache/neural-memory/datasets``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "neural-memory" / "datasets"


def url_variable(name: str) -> str:
    """The environment variable that overrides the URL of dataset ``name``."""
    return URL_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def dataset_url(spec: DatasetSpec) -> str:
    """``$NEURAL_MEMORY_DATASET_URL_<NAME>`` if set, else the registry's URL."""
    return os.environ.get(url_variable(spec.name)) or spec.url


def read_manifest(cache_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The manifest's entries by dataset name (empty when there is no manifest)."""
    path = cache_directory(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text("utf-8"))
        entries = document["datasets"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a dataset manifest ({error}); delete it to start over") from error
    if not isinstance(entries, dict):
        raise ValueError(f"{path} is not a dataset manifest; delete it to start over")
    return entries


def cached_entry(name: str, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The manifest entry of dataset ``name`` (kept with its pin when the file is deleted), or ``None``."""
    return read_manifest(cache_dir).get(get_spec(name).name)


def dataset_path(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
    progress: bool | None = None,
    expected_sha256: str | None = None,
) -> Path:
    """The path of dataset ``name``'s text file in the cache, downloading it first if it is not there.

    Args:
        name: a name of :func:`available_datasets`.
        cache_dir: the cache directory (default: see :func:`cache_directory`).
        download: if False, a dataset that is not cached raises ``FileNotFoundError`` instead.
        progress: show a download progress bar (``None``: only when stderr is a terminal).
        expected_sha256: the SHA-256 the download must have (the archive's, for a zip). It must agree with
            the registry's digest and with a digest pinned in the manifest; for a dataset whose digest is
            unknown it checks (and pins) the first download instead of trusting it.

    Raises:
        ValueError: an unknown name, a malformed ``expected_sha256``, or expectations that disagree.
        DatasetIntegrityError: the download (deleted) or the cached file has the wrong size or digest.
        DownloadError: the download failed; a partial download is kept and the next call resumes it.
        FileNotFoundError: ``download=False`` and the dataset is not cached.
    """
    spec = get_spec(name)
    expected = _normalise_digest(expected_sha256)
    cache = cache_directory(cache_dir)
    target = cache / spec.file_name
    if not download:
        entry = read_manifest(cache).get(spec.name)
        if not _is_current(spec, entry) or not target.is_file():
            raise FileNotFoundError(
                f"dataset {spec.name} is not in the cache {cache}; "
                f"download it with `neural-memory data download {spec.name}`"
            )
        _verify_cached(spec, entry, target, expected)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with _cache_lock(cache):
        entry = read_manifest(cache).get(spec.name)
        if not _is_current(spec, entry):
            entry = None  # downloaded before the registry had a digest: download again, checked
        if entry is not None and target.is_file():
            _verify_cached(spec, entry, target, expected)
            return target
        _download(spec, cache, entry, expected, progress)
    return target


def _is_current(spec: DatasetSpec, entry: dict[str, Any] | None) -> bool:
    """Whether a manifest entry exists and agrees with the registry's digest (if there is one)."""
    return entry is not None and (spec.sha256 is None or entry.get("download_sha256") == spec.sha256)


# ------------------------------------------------------------------------------------------------
# verification
# ------------------------------------------------------------------------------------------------


def _normalise_digest(digest: str | None) -> str | None:
    if digest is None:
        return None
    value = digest.strip().lower()
    if not _HEX64.fullmatch(value):
        raise ValueError(f"a SHA-256 digest is 64 hex digits, got {digest!r}")
    return value


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path`` (lower-case hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_cached(spec: DatasetSpec, entry: dict[str, Any], target: Path, expected: str | None) -> None:
    """Refuse a cached file that is not the one the manifest recorded (deleted), or not ``expected``."""
    pinned = entry.get("download_sha256")
    if expected is not None and expected != pinned:
        raise DatasetIntegrityError(
            f"dataset {spec.name}: the expected sha256 {expected} does not match the cached download's "
            f"sha256 {pinned} ({entry.get('digest_source')}, {entry.get('downloaded')}); the cache was left "
            f"as it is"
        )
    size = target.stat().st_size
    actual = file_sha256(target) if size == entry.get("size") else None
    if actual is None or actual != entry.get("sha256"):
        target.unlink()
        found = f"sha256 {actual}" if actual is not None else f"{size:,} bytes"
        recorded = f"sha256 {entry.get('sha256')}" if actual is not None else f"{entry.get('size'):,} bytes"
        raise DatasetIntegrityError(
            f"dataset {spec.name}: the cached file {target} has {found}, the manifest records {recorded}; "
            f"it changed after the download and was deleted: run again to download it anew"
        )


def _expectation(
    spec: DatasetSpec, entry: dict[str, Any] | None, expected: str | None
) -> tuple[str | None, str]:
    """The digest a new download must have and its source (``(None, FROM_FIRST_DOWNLOAD)``: trust it)."""
    known: list[tuple[str, str]] = []
    if spec.sha256 is not None:
        known.append((spec.sha256, FROM_REGISTRY))
    elif entry is not None and entry.get("download_sha256"):
        known.append((entry["download_sha256"], entry.get("digest_source", FROM_FIRST_DOWNLOAD)))
    if expected is not None:
        known.append((expected, FROM_USER))
    for digest, source in known[1:]:
        if digest != known[0][0]:
            raise ValueError(
                f"dataset {spec.name}: the expected sha256 {digest} ({source}) disagrees with {known[0][0]} "
                f"({_describe_source(known[0][1], entry)}); nothing was downloaded"
            )
    return known[0] if known else (None, FROM_FIRST_DOWNLOAD)


def _describe_source(source: str, entry: dict[str, Any] | None) -> str:
    if source == FROM_REGISTRY:
        return "the registry's digest"
    when = f" on {entry.get('pinned')}" if entry is not None and entry.get("pinned") else ""
    return f"pinned in the manifest{when} ({source})"


# ------------------------------------------------------------------------------------------------
# download
# ------------------------------------------------------------------------------------------------


def _download(
    spec: DatasetSpec,
    cache: Path,
    entry: dict[str, Any] | None,
    expected: str | None,
    progress: bool | None,
) -> None:
    """Fetch, verify, extract and move ``spec`` into ``cache``, then record it in the manifest."""
    want, source = _expectation(spec, entry, expected)
    url = dataset_url(spec)
    part, meta = cache / f"{spec.name}.part", cache / f"{spec.name}.part.json"
    _fetch(spec, url, part, meta, progress)

    def discard(*paths: Path) -> None:
        for path in (part, meta, *paths):
            path.unlink(missing_ok=True)

    size = part.stat().st_size
    if spec.size is not None and size != spec.size:
        discard()
        raise DatasetIntegrityError(
            f"dataset {spec.name}: the download from {url} has {size:,} bytes, expected {spec.size:,}; "
            f"it was deleted and nothing was cached"
        )
    digest = file_sha256(part)
    if want is not None and digest != want:
        discard()
        raise DatasetIntegrityError(
            f"dataset {spec.name}: the download from {url} has sha256 {digest}, expected {want} "
            f"({_describe_source(source, entry)}); it was deleted and nothing was cached"
        )
    if spec.member is None:
        text, text_digest = part, digest
    else:
        text = cache / f"{spec.name}.extracting"
        try:
            text_digest = _extract(spec, url, part, text)
        except DatasetIntegrityError:
            discard(text)
            raise
        except BaseException:  # e.g. a full disk: the verified download stays for the next call
            text.unlink(missing_ok=True)
            raise
    text_size = text.stat().st_size
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {
        "file": spec.file_name,
        "size": text_size,
        "sha256": text_digest,
        "url": url,
        "member": spec.member,
        "download_size": size,
        "download_sha256": digest,
        "digest_source": source,
        "pinned": entry.get("pinned", now) if entry is not None and want is not None else now,
        "downloaded": now,
    }
    os.replace(text, cache / spec.file_name)
    discard()
    _write_entry(cache, spec.name, record)
    if want is None:
        print(
            f"{spec.name}: no SHA-256 is published for {url}, so this first download is trusted "
            f"(trust on first use): sha256 {digest} ({size:,} bytes), now pinned in {cache / MANIFEST_NAME}; "
            f"later downloads into this cache must match it. Compare it with a digest you trust, or "
            f"download with --sha256 to check it.",
            file=sys.stderr,
        )


def _extract(spec: DatasetSpec, url: str, archive_path: Path, out: Path) -> str:
    """Copy ``spec.member`` of the zip at ``archive_path`` to ``out``; its SHA-256."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(archive_path) as archive:
            try:
                info = archive.getinfo(spec.member)
            except KeyError:
                names = archive.namelist()
                shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
                raise DatasetIntegrityError(
                    f"dataset {spec.name}: the archive from {url} has no member {spec.member!r} "
                    f"(it holds {shown}); it was deleted and nothing was cached"
                ) from None
            with archive.open(info) as source, open(out, "wb") as sink:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    sink.write(chunk)
    except zipfile.BadZipFile as error:  # also a member whose CRC-32 does not match
        raise DatasetIntegrityError(
            f"dataset {spec.name}: the download from {url} is not a readable zip archive ({error}); "
            f"it was deleted and nothing was cached"
        ) from error
    size = out.stat().st_size
    if spec.member_size is not None and size != spec.member_size:
        raise DatasetIntegrityError(
            f"dataset {spec.name}: the member {spec.member} has {size:,} bytes, expected "
            f"{spec.member_size:,}; the download was deleted and nothing was cached"
        )
    return digest.hexdigest()


def _fetch(spec: DatasetSpec, url: str, part: Path, meta: Path, progress: bool | None) -> None:
    """Make ``part`` the complete download of ``url``, resuming what an earlier call left there."""
    import neural_memory

    offset = part.stat().st_size if part.is_file() else 0
    try:
        validators = json.loads(meta.read_text("utf-8")) if meta.is_file() and offset else {}
    except ValueError:  # unreadable: the partial download cannot be trusted to belong to this URL
        validators = {}
    if not isinstance(validators, dict):
        validators = {}
    if offset and validators.get("url") != url:  # a partial download of another URL: start over
        offset = 0
    if offset and spec.size is not None and offset >= spec.size:
        if offset == spec.size:
            return  # complete; verified by the caller
        offset = 0
    headers = {"User-Agent": f"neural-memory/{neural_memory.__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validators.get("etag") or validators.get("last_modified"):
            headers["If-Range"] = validators.get("etag") or validators["last_modified"]

    def failed(reason: object) -> DownloadError:
        kept = part.stat().st_size if part.is_file() else 0
        keep = (
            f"the partial download {part} ({kept:,} bytes) is kept: run again to resume"
            if kept
            else "nothing was kept"
        )
        return DownloadError(f"download of dataset {spec.name} from {url} failed: {reason}; {keep}")

    try:
        request = urllib.request.Request(url, headers=headers)
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the range starts at the end: complete if the total agrees
            total = _range_total(error.headers.get("Content-Range"))
            error.close()
            if total == offset:
                return
            part.unlink()
            return _fetch(spec, url, part, meta, progress)
        raise failed(f"HTTP {error.code} {error.reason}") from error
    except (OSError, http.client.HTTPException) as error:
        raise failed(getattr(error, "reason", error)) from error
    with response:
        total: int | None
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:  # not the range we asked for: start over
                part.unlink()
                return _fetch(spec, url, part, meta, progress)
            mode = "ab"
        else:  # 200: the whole file (a server that ignores Range, or If-Range found it changed)
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
        meta.write_text(
            json.dumps(
                {
                    "url": url,
                    "etag": response.headers.get("ETag"),
                    "last_modified": response.headers.get("Last-Modified"),
                }
            ),
            "utf-8",
        )
        _stream(spec.name, response, part, mode, offset, total, progress, failed)
    received = part.stat().st_size
    if total is not None and received != total:
        raise failed(f"the connection closed after {received:,} of {total:,} bytes")


def _stream(
    name: str,
    response: http.client.HTTPResponse,
    part: Path,
    mode: str,
    offset: int,
    total: int | None,
    progress: bool | None,
    failed: Callable[[object], DownloadError],
) -> None:
    """Append (``mode="ab"``) or write the body of ``response`` to ``part`` under a tqdm bar."""
    from tqdm.auto import tqdm

    disable = None if progress is None else not progress  # tqdm: None = only on a terminal
    bar = tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=disable
    )
    with bar, open(part, mode) as sink:
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as error:
                sink.flush()
                raise failed(error) from error
            if not chunk:
                return
            sink.write(chunk)
            bar.update(len(chunk))


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """``"bytes START-END/TOTAL"`` → ``(START, TOTAL)`` (``None`` for what is missing or ``*``)."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", header or "")
    if match is None:
        return None, None
    return int(match[1]), int(match[2]) if match[2] != "*" else None


def _range_total(header: str | None) -> int | None:
    """``"bytes */TOTAL"`` (a 416 answer) → ``TOTAL``."""
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", header or "")
    return int(match[1]) if match else None


# ------------------------------------------------------------------------------------------------
# the manifest and the lock
# ------------------------------------------------------------------------------------------------


def _write_entry(cache: Path, name: str, record: dict[str, Any]) -> None:
    entries = read_manifest(cache)
    entries[name] = record
    path = cache / MANIFEST_NAME
    tmp = path.with_name(f"{MANIFEST_NAME}.tmp")
    tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "datasets": entries}, indent=2) + "\n", "utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``cache/.lock`` (nothing where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(cache / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process using the dataset cache {cache}", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


__all__ = [
    "CACHE_ENV",
    "DATASETS",
    "URL_ENV_PREFIX",
    "DatasetIntegrityError",
    "DatasetSpec",
    "DownloadError",
    "available_datasets",
    "cache_directory",
    "cached_entry",
    "dataset_path",
    "dataset_url",
    "file_sha256",
    "get_spec",
    "read_manifest",
    "url_variable",
]
