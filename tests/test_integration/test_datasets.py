"""Named datasets (neural_memory.datasets, ``neural-memory data``, ``train --dataset``), served on loopback.

Every download goes to an ``http.server`` on 127.0.0.1 (port 0) in a background thread, serving generated
files; the registry is extended with small test datasets and the URLs are replaced through
``NEURAL_MEMORY_DATASET_URL_<NAME>``. A guard fails any test whose download is not on 127.0.0.1, and the
cache is always under ``tmp_path`` (never ``~/.cache``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import urllib.request
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import neural_memory
from neural_memory import datasets
from neural_memory.cli import main
from neural_memory.datasets import (
    DatasetIntegrityError,
    DatasetSpec,
    DownloadError,
    dataset_path,
    read_manifest,
    url_variable,
)

SRC = Path(neural_memory.__file__).resolve().parents[1]
SHARED_SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")  # this workplace's copy, if present

TEXT = b"".join(b"line %05d: the quick brown fox jumps over the lazy dog\n" % i for i in range(400))
OTHER = TEXT.replace(b"fox", b"cat")  # same size, other digest
MEMBER = b"".join(b"member %04d of the archive\n" % i for i in range(300))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass
class Server:
    """The loopback server's files and behaviour, and the requests it saw (path, Range header, status)."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    drop_after: int | None = None  # send this many bytes of the next response, then close the connection
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def hits(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == f"/{path}")


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            data = server.files.get(self.path)
            requested = self.headers.get("Range")
            if data is None:
                server.requests.append((self.path, requested, 404))
                self.send_error(404)
                return
            etag = f'"{sha256(data)[:16]}"'
            start = 0
            unchanged = self.headers.get("If-Range") in (None, etag)
            if requested and not server.ignore_range and unchanged:
                start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(data) > 0:
                server.requests.append((self.path, requested, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206 if start else 200
            server.requests.append((self.path, requested, status))
            self.send_response(status)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("ETag", etag)
            self.end_headers()
            body = data[start:]
            if server.drop_after is not None:
                body, server.drop_after = body[: server.drop_after], None
            self.wfile.write(body)  # HTTP/1.0: the connection closes after the handler returns

    return Handler


@pytest.fixture
def server():
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Cache under tmp_path, no proxy for loopback, and a guard against any request off 127.0.0.1."""
    monkeypatch.setenv("NEURAL_MEMORY_CACHE", str(tmp_path / "env-cache"))
    for name in list(os.environ):
        if name.startswith(datasets.URL_ENV_PREFIX) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    real_urlopen = urllib.request.urlopen

    def loopback_only(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        assert url.startswith("http://127.0.0.1:"), f"a test tried to reach {url}"
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", loopback_only)


def add_dataset(monkeypatch, server: Server, name: str, data: bytes, **spec) -> DatasetSpec:
    """Serve ``data`` at /NAME and register dataset NAME whose URL override points there."""
    server.files[f"/{name}"] = data
    fields = {"member": None, "size": len(data), "sha256": sha256(data), "description": "t", "license": "-"}
    fields.update(spec)
    made = DatasetSpec(name=name, url=f"https://example.invalid/{name}", **fields)
    monkeypatch.setitem(datasets.DATASETS, name, made)
    monkeypatch.setenv(url_variable(name), server.url(name))
    return made


def leftovers(cache: Path, name: str) -> list[str]:
    """The files of dataset ``name`` in ``cache`` (final file, .part, its metadata, extraction)."""
    return sorted(p.name for p in cache.glob(f"{name}*")) if cache.exists() else []


# ------------------------------------------------------------------------------------------------
# the library
# ------------------------------------------------------------------------------------------------


def test_download_verifies_and_records_the_manifest(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT)
    cache = tmp_path / "cache"
    path = dataset_path("plain", cache_dir=cache, progress=False)
    assert path == cache / "plain.txt"
    assert path.read_bytes() == TEXT
    assert leftovers(cache, "plain") == ["plain.txt"]  # no .part, no metadata left
    entry = read_manifest(cache)["plain"]
    assert entry["file"] == "plain.txt" and entry["size"] == len(TEXT)
    assert entry["sha256"] == entry["download_sha256"] == sha256(TEXT)
    assert entry["url"] == server.url("plain") and entry["digest_source"] == "registry"
    assert entry["downloaded"].endswith("+00:00")
    assert server.requests == [("/plain", None, 200)]


def test_a_cached_dataset_is_not_downloaded_again(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT)
    cache = tmp_path / "cache"
    first = dataset_path("plain", cache_dir=cache)
    assert dataset_path("plain", cache_dir=cache) == first
    assert dataset_path("plain", cache_dir=cache, download=False) == first
    assert server.hits("plain") == 1


def test_the_cache_defaults_to_the_environment_variable(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT)
    assert dataset_path("plain") == tmp_path / "env-cache" / "plain.txt"
    monkeypatch.delenv("NEURAL_MEMORY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.cache_directory() == tmp_path / "home" / ".cache" / "neural-memory" / "datasets"


def test_a_wrong_registry_digest_is_refused_and_nothing_is_cached(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT, sha256=sha256(OTHER))
    cache = tmp_path / "cache"
    with pytest.raises(DatasetIntegrityError) as error:
        dataset_path("plain", cache_dir=cache)
    message = str(error.value)
    assert "dataset plain" in message and sha256(OTHER) in message and sha256(TEXT) in message
    assert leftovers(cache, "plain") == []
    assert "plain" not in read_manifest(cache)
    with pytest.raises(FileNotFoundError, match="not in the cache"):
        dataset_path("plain", cache_dir=cache, download=False)


def test_a_wrong_size_is_refused_and_nothing_is_cached(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT, size=len(TEXT) + 1, sha256=None)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetIntegrityError, match=f"has {len(TEXT):,} bytes, expected {len(TEXT) + 1:,}"):
        dataset_path("plain", cache_dir=cache)
    assert leftovers(cache, "plain") == [] and read_manifest(cache) == {}


def test_a_dropped_connection_keeps_the_part_and_the_next_call_resumes_it(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT)
    cache = tmp_path / "cache"
    server.drop_after = 1000
    with pytest.raises(DownloadError, match=r"closed after 1,000 of .*plain\.part.* is kept: run again"):
        dataset_path("plain", cache_dir=cache)
    assert (cache / "plain.part").read_bytes() == TEXT[:1000]
    assert not (cache / "plain.txt").exists()
    path = dataset_path("plain", cache_dir=cache, progress=True)  # a bar starting at 1,000 bytes
    assert path.read_bytes() == TEXT
    assert server.requests == [("/plain", None, 200), ("/plain", "bytes=1000-", 206)]
    assert leftovers(cache, "plain") == ["plain.txt"]


def test_a_server_that_ignores_range_is_read_again_from_the_start(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT)
    cache = tmp_path / "cache"
    server.drop_after = 1000
    with pytest.raises(DownloadError):
        dataset_path("plain", cache_dir=cache)
    server.ignore_range = True
    assert dataset_path("plain", cache_dir=cache).read_bytes() == TEXT  # not 1000 bytes + the whole file
    assert server.requests[-1] == ("/plain", "bytes=1000-", 200)


def test_a_file_changed_on_the_server_between_attempts_restarts_the_download(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT, sha256=None)
    cache = tmp_path / "cache"
    server.drop_after = 1000
    with pytest.raises(DownloadError):
        dataset_path("plain", cache_dir=cache)
    server.files["/plain"] = OTHER  # a new ETag: If-Range makes the server send the whole new file
    assert dataset_path("plain", cache_dir=cache).read_bytes() == OTHER
    assert server.requests[-1] == ("/plain", "bytes=1000-", 200)


def test_a_complete_part_left_before_verification_is_not_fetched_again(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT, size=None, sha256=None)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "plain.part").write_bytes(TEXT)
    (cache / "plain.part.json").write_text(json.dumps({"url": server.url("plain")}))
    assert dataset_path("plain", cache_dir=cache).read_bytes() == TEXT
    assert server.requests == [("/plain", f"bytes={len(TEXT)}-", 416)]


def test_a_zip_member_is_extracted_and_the_archive_removed(tmp_path, server, monkeypatch):
    archive = zip_bytes({"corpus/train.txt": MEMBER, "corpus/test.txt": b"not this one\n"})
    add_dataset(monkeypatch, server, "zipped", archive, member="corpus/train.txt", member_size=len(MEMBER))
    cache = tmp_path / "cache"
    path = dataset_path("zipped", cache_dir=cache)
    assert path.read_bytes() == MEMBER
    assert leftovers(cache, "zipped") == ["zipped.txt"]
    entry = read_manifest(cache)["zipped"]
    assert entry["download_sha256"] == sha256(archive) and entry["download_size"] == len(archive)
    assert entry["sha256"] == sha256(MEMBER) and entry["size"] == len(MEMBER)
    assert entry["member"] == "corpus/train.txt"


def test_a_missing_member_or_a_non_zip_download_is_refused(tmp_path, server, monkeypatch):
    cache = tmp_path / "cache"
    archive = zip_bytes({"corpus/test.txt": MEMBER})
    add_dataset(monkeypatch, server, "zipped", archive, member="corpus/train.txt")
    with pytest.raises(DatasetIntegrityError, match=r"no member 'corpus/train.txt' \(it holds corpus/test"):
        dataset_path("zipped", cache_dir=cache)
    add_dataset(monkeypatch, server, "notzip", b"<html>moved</html>", member="x", sha256=None)
    with pytest.raises(DatasetIntegrityError, match="not a readable zip archive"):
        dataset_path("notzip", cache_dir=cache)
    assert leftovers(cache, "zipped") == leftovers(cache, "notzip") == []
    assert read_manifest(cache) == {}


def test_trust_on_first_use_pins_then_refuses_a_changed_file(tmp_path, server, monkeypatch, capsys):
    archive = zip_bytes({"data": MEMBER})
    add_dataset(monkeypatch, server, "tofu", archive, member="data", size=None, sha256=None)
    cache = tmp_path / "cache"
    path = dataset_path("tofu", cache_dir=cache)
    notice = capsys.readouterr().err
    assert "trust on first use" in notice and sha256(archive) in notice and "pinned" in notice
    entry = read_manifest(cache)["tofu"]
    assert entry["download_sha256"] == sha256(archive)
    assert entry["digest_source"] == "trust on first use"
    path.unlink()  # the file goes, the pin stays
    server.files["/tofu"] = zip_bytes({"data": MEMBER + b"tampered\n"})
    with pytest.raises(DatasetIntegrityError) as error:
        dataset_path("tofu", cache_dir=cache)
    assert sha256(archive) in str(error.value) and "pinned in the manifest" in str(error.value)
    assert sha256(server.files["/tofu"]) in str(error.value)
    assert leftovers(cache, "tofu") == []
    assert read_manifest(cache)["tofu"] == entry  # the pin is unchanged
    server.files["/tofu"] = archive  # the pinned bytes again: accepted without a new notice
    assert dataset_path("tofu", cache_dir=cache).read_bytes() == MEMBER
    assert "trust on first use" not in capsys.readouterr().err


def test_a_cached_file_changed_after_download_is_refused_and_deleted(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT)
    cache = tmp_path / "cache"
    path = dataset_path("plain", cache_dir=cache)
    path.write_bytes(OTHER)  # same size, other bytes
    with pytest.raises(DatasetIntegrityError, match=rf"has sha256 {sha256(OTHER)}.*changed after the"):
        dataset_path("plain", cache_dir=cache)
    assert not path.exists()
    assert dataset_path("plain", cache_dir=cache).read_bytes() == TEXT  # downloaded anew
    assert server.hits("plain") == 2


def test_expected_sha256_is_checked_on_the_first_download(tmp_path, server, monkeypatch, capsys):
    add_dataset(monkeypatch, server, "tofu", TEXT, size=None, sha256=None)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetIntegrityError, match=f"sha256 {sha256(TEXT)}, expected {sha256(OTHER)}"):
        dataset_path("tofu", cache_dir=cache, expected_sha256=sha256(OTHER))
    assert leftovers(cache, "tofu") == [] and read_manifest(cache) == {}
    dataset_path("tofu", cache_dir=cache, expected_sha256=sha256(TEXT).upper())
    assert read_manifest(cache)["tofu"]["digest_source"] == "expected_sha256"
    assert "trust on first use" not in capsys.readouterr().err
    with pytest.raises(DatasetIntegrityError, match="does not match the cached download"):
        dataset_path("tofu", cache_dir=cache, expected_sha256=sha256(OTHER))
    assert (cache / "tofu.txt").read_bytes() == TEXT  # a wrong expectation leaves the verified cache alone


def test_expected_sha256_that_disagrees_with_the_registry_downloads_nothing(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT)
    with pytest.raises(ValueError, match=r"disagrees with .*registry"):
        dataset_path("plain", cache_dir=tmp_path, expected_sha256=sha256(OTHER))
    with pytest.raises(ValueError, match="64 hex digits"):
        dataset_path("plain", cache_dir=tmp_path, expected_sha256="abc")
    assert server.requests == []


def test_an_http_error_or_an_unreachable_server_is_a_download_error(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "plain", TEXT)
    del server.files["/plain"]
    with pytest.raises(DownloadError, match=r"HTTP 404.*nothing was kept"):
        dataset_path("plain", cache_dir=tmp_path)
    monkeypatch.setenv(url_variable("plain"), "http://127.0.0.1:9/plain")  # discard port: refused
    with pytest.raises(DownloadError, match=r"download of dataset plain from http://127\.0\.0\.1:9/plain"):
        dataset_path("plain", cache_dir=tmp_path)


def test_the_registered_tinyshakespeare_digest_is_the_known_file(tmp_path, server, monkeypatch):
    if not SHARED_SHAKESPEARE.is_file():
        pytest.skip("this workplace's copy of tinyshakespeare is not here")
    server.files["/input.txt"] = SHARED_SHAKESPEARE.read_bytes()
    monkeypatch.setenv(url_variable("tinyshakespeare"), server.url("input.txt"))
    path = dataset_path("tinyshakespeare", cache_dir=tmp_path)
    assert path.read_bytes() == SHARED_SHAKESPEARE.read_bytes()
    assert read_manifest(tmp_path)["tinyshakespeare"]["digest_source"] == "registry"


def test_unknown_dataset_names_list_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'nope'; available datasets: tinyshakespeare, en"):
        dataset_path("nope")
    assert url_variable("wikitext-103") == "NEURAL_MEMORY_DATASET_URL_WIKITEXT_103"


# ------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------


def test_data_list_download_and_path(tmp_path, server, monkeypatch, capsys):
    add_dataset(monkeypatch, server, "plain", TEXT)
    cache = str(tmp_path / "cache")
    assert main(["data", "list", "--cache-dir", cache]) == 0
    listing = capsys.readouterr().out
    assert f"plain: not cached; download {len(TEXT):,} bytes" in listing
    assert "enwik8: not cached; download 36,445,475 bytes (zip; member enwik8, 100,000,000 bytes)" in listing
    assert "trust on first use" in listing
    with pytest.raises(SystemExit, match="neural-memory data: error: dataset plain is not in the cache"):
        main(["data", "path", "plain", "--cache-dir", cache])
    assert main(["data", "download", "plain", "--cache-dir", cache]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(Path(cache) / "plain.txt")
    assert f"sha256 {sha256(TEXT)}" in out[1] and "(registry)" in out[1]
    assert main(["data", "path", "plain", "--cache-dir", cache]) == 0
    assert capsys.readouterr().out.strip() == str(Path(cache) / "plain.txt")
    assert main(["data", "list", "--cache-dir", cache]) == 0
    listing = capsys.readouterr().out
    assert f"plain: cached, {len(TEXT):,} bytes: {Path(cache) / 'plain.txt'}" in listing
    assert f"sha256 {sha256(TEXT)} (registry)" in listing
    assert server.hits("plain") == 1


def test_data_list_shows_a_pinned_digest(tmp_path, server, monkeypatch, capsys):
    add_dataset(monkeypatch, server, "tofu", TEXT, sha256=None)
    cache = str(tmp_path / "cache")
    assert main(["data", "download", "tofu", "--cache-dir", cache, "--no-progress"]) == 0
    assert "trust on first use" in capsys.readouterr().err
    main(["data", "list", "--cache-dir", cache])
    assert f"sha256 {sha256(TEXT)} (pinned " in capsys.readouterr().out


def test_data_download_sha256_mismatch_and_unknown_name_are_one_line_errors(tmp_path, server, monkeypatch):
    add_dataset(monkeypatch, server, "tofu", TEXT, sha256=None)
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "download", "tofu", "--cache-dir", str(cache), "--sha256", sha256(OTHER)])
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message  # exit status 1, one line on stderr
    assert message.startswith("neural-memory data: error: dataset tofu:") and sha256(OTHER) in message
    assert leftovers(cache, "tofu") == []
    with pytest.raises(SystemExit, match="unknown dataset 'nope'; available datasets: tinyshakespeare"):
        main(["data", "download", "nope", "--cache-dir", str(cache)])


def test_data_errors_print_no_traceback_in_a_real_process(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p),
        "NEURAL_MEMORY_CACHE": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "neural_memory", "data", "path", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "neural-memory data: error: unknown dataset 'nope'; available datasets: "
        "tinyshakespeare, enwik8, wikitext-103"
    )


TINY = ["--steps", "2", "--seq-len", "16", "--batch-size", "2", "--dim", "16", "--depth", "1"]


def test_train_dataset_downloads_trains_and_stores_the_path(tmp_path, server, monkeypatch, capsys):
    from neural_memory.training import load_checkpoint

    add_dataset(monkeypatch, server, "plain", TEXT)
    out = tmp_path / "run"
    argv = ["train", "transformer", "--dataset", "plain", "--out", str(out), *TINY, "--no-progress"]
    assert main(argv) == 0
    cached = tmp_path / "env-cache" / "plain.txt"
    assert cached.read_bytes() == TEXT
    config = load_checkpoint(out / "checkpoint.pt")["config"]
    assert config["text"] == str(cached) and config["steps"] == 2
    # resumes from the stored path, without --dataset
    assert main(["train", "transformer", "--resume", "--out", str(out), "--steps", "3", "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["config"]["text"] == str(cached)
    assert server.hits("plain") == 1


def test_train_dataset_errors(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_bytes(TEXT)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "transformer", "--text", str(text), "--dataset", "enwik8", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --dataset: not allowed with argument --text" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"^neural-memory train: error: --dataset nope: unknown dataset 'no"):
        main(["train", "transformer", "--dataset", "nope", "--out", str(tmp_path)])


def test_experiment_dataset_resolves_to_the_cached_file(tmp_path, server, monkeypatch, capsys):
    from neural_memory.cli import build_parser
    from neural_memory.commands._experiment_args import context

    add_dataset(monkeypatch, server, "plain", TEXT)
    args = build_parser().parse_args(["experiment", "lm", "--scale", "test", "--dataset", "plain"])
    assert context(args, "experiment").text == tmp_path / "env-cache" / "plain.txt"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["reproduce", "--text", "x", "--dataset", "plain"])
    assert exit_info.value.code == 2
