"""Tests of recsys_helpers.download against a local HTTP server (no network)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recsys_helpers import datasets, download
from recsys_helpers.datasets import check_file

REVIEWS = datasets.get_dataset("comics_reviews")
TSV = datasets.get_dataset("fantasy_tsv")
TIMEOUT = 2


def _reviews_bytes() -> bytes:
    lines = [
        json.dumps({"user_id": f"u{i}", "book_id": f"b{i % 3}", "review_id": f"r{i}",
                    "rating": i % 6, "review_text": "fine", "n_votes": 0, "n_comments": 0})
        for i in range(20)
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode())


TSV_BYTES = b"".join(f"u{i}\ti{i % 4}\t{i % 5 + 1}\n".encode() for i in range(20))


class Server:
    """A threaded HTTP server: ``routes`` maps a path to bytes, or ("cut", bytes)."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                cut = isinstance(body, tuple)
                data = body[1] if cut else body
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if cut:  # promise the whole body, send half, hang up
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def dest(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setenv("RECSYS_DATA_DIR", str(folder))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return folder


@pytest.fixture
def server(monkeypatch, dest):
    srv = Server()
    monkeypatch.setenv("RECSYS_DATA_URL", srv.url)
    yield srv
    srv.close()


def _fetch(*names, **kw):
    return download.fetch(list(names), timeout=TIMEOUT, **kw)


def _assert_clean(dest: Path, filename: str):
    assert not (dest / filename).exists()
    leftovers = [p.name for p in dest.iterdir()] if dest.exists() else []
    assert leftovers == [], f"left behind: {leftovers}"


def test_success_lands_validates_and_reports(server, dest, capfd):
    server.routes["/" + REVIEWS.filename] = _reviews_bytes()
    server.routes["/" + TSV.filename] = TSV_BYTES
    paths = _fetch(REVIEWS.name, TSV.filename)
    assert paths == [dest / REVIEWS.filename, dest / TSV.filename]
    check_file(paths[0], "jsonl.gz")
    check_file(paths[1], "tsv")
    assert paths[1].read_bytes() == TSV_BYTES
    assert sorted(p.name for p in dest.iterdir()) == sorted([REVIEWS.filename, TSV.filename])
    out, err = capfd.readouterr()
    assert f"saved to {dest / REVIEWS.filename}" in out
    assert "B/s" in err or "100%" in err  # the tqdm progress bar


def test_404_everywhere(server, dest):
    with pytest.raises(download.FetchError) as info:
        _fetch(REVIEWS.name, progress=False)
    msg = str(info.value)
    assert server.url + REVIEWS.filename in msg and "404" in msg
    _assert_clean(dest, REVIEWS.filename)


def test_wrong_sha256_rejected(server, dest, monkeypatch):
    bogus = dataclasses.replace(REVIEWS, sha256="0" * 64)
    monkeypatch.setitem(datasets.REGISTRY, REVIEWS.name, bogus)
    server.routes["/" + REVIEWS.filename] = _reviews_bytes()
    with pytest.raises(download.FetchError, match="hash"):
        _fetch(REVIEWS.name, progress=False)
    _assert_clean(dest, REVIEWS.filename)


def test_right_sha256_accepted(server, dest, monkeypatch):
    import hashlib

    body = _reviews_bytes()
    good = dataclasses.replace(REVIEWS, sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setitem(datasets.REGISTRY, REVIEWS.name, good)
    server.routes["/" + REVIEWS.filename] = body
    assert _fetch(REVIEWS.name, progress=False) == [dest / REVIEWS.filename]


def test_connection_cut_mid_file(server, dest):
    server.routes["/" + REVIEWS.filename] = ("cut", _reviews_bytes() * 50)
    with pytest.raises(download.FetchError) as info:
        _fetch(REVIEWS.name, progress=False)
    assert server.url + REVIEWS.filename in str(info.value)
    _assert_clean(dest, REVIEWS.filename)


@pytest.mark.parametrize("first", ["404", "closed"])
def test_mirror_fallback(server, dest, monkeypatch, first):
    first_url = server.url + "missing/" if first == "404" else _closed_port_url()
    monkeypatch.setenv("RECSYS_DATA_URL", f"{first_url},{server.url}")
    server.routes["/" + TSV.filename] = TSV_BYTES
    assert _fetch(TSV.name, progress=False) == [dest / TSV.filename]
    assert (dest / TSV.filename).read_bytes() == TSV_BYTES


def test_corrupt_gzip_rejected(server, dest):
    body = _reviews_bytes()
    server.routes["/" + REVIEWS.filename] = body[: len(body) - 12]  # truncated gzip, served whole
    with pytest.raises(download.FetchError, match="DataFormatError"):
        _fetch(REVIEWS.name, progress=False)
    _assert_clean(dest, REVIEWS.filename)


def test_no_server(dest, monkeypatch):
    url = _closed_port_url()
    monkeypatch.setenv("RECSYS_DATA_URL", url)
    with pytest.raises(download.FetchError) as info:
        _fetch(TSV.name, progress=False)
    msg = str(info.value)
    assert url + TSV.filename in msg
    assert "RECSYS_DATA=sample" in msg and "bundled synthetic sample" in msg
    _assert_clean(dest, TSV.filename)


def test_fetch_command_exit_codes(server, dest, capsys):
    assert download.fetch_command([TSV.name]) == 1
    assert server.url + TSV.filename in capsys.readouterr().err
    assert download.fetch_command(["no_such_dataset"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    server.routes["/" + TSV.filename] = TSV_BYTES
    assert download.fetch_command([TSV.name]) == 0


def test_present_file_not_downloaded_again(server, dest, capsys):
    dest.mkdir()
    (dest / TSV.filename).write_bytes(TSV_BYTES)
    assert _fetch(TSV.name) == [dest / TSV.filename]
    assert server.requests == []
    assert "already present" in capsys.readouterr().out


def test_invalid_present_file_replaced(server, dest):
    dest.mkdir()
    (dest / TSV.filename).write_bytes(b"not\ta valid line\n")
    server.routes["/" + TSV.filename] = TSV_BYTES
    _fetch(TSV.name, progress=False)
    assert (dest / TSV.filename).read_bytes() == TSV_BYTES
    assert server.requests == ["/" + TSV.filename]


def test_unknown_name_raises_keyerror(dest):
    with pytest.raises(KeyError, match="unknown dataset"):
        download.fetch(["nope"])
