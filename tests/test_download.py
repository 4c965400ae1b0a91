"""Tests for ``ssmtl_core.data.download`` against a local HTTP server (no internet needed).

The server supports ``Range: bytes=N-`` (206 + Content-Range), logs every Range header it receives, and can
be scripted per request to break the connection after N bytes or answer an error status, so resuming,
retrying and the no-range fallback are exercised for real over sockets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssmtl_core.data import download as dl
from ssmtl_core.errors import SSMTLError

UCSD = "UCSD_Anomaly_Dataset.tar.gz"
AVENUE = "Avenue_Dataset.zip"
AVENUE_GT = "ground_truth_demo.zip"


# --------------------------------------------------------------------------------------------------------
# fabricated archives
# --------------------------------------------------------------------------------------------------------


def _png_like(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _tar_gz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def make_archives() -> dict[str, bytes]:
    """A fake UCSD tarball (~350 KB of incompressible noise frames) and a fake Avenue zip pair."""
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (240, 360), dtype=np.uint8) for _ in range(4)]
    base = "UCSD_Anomaly_Dataset.v1p2"
    ucsd = {
        f"{base}/UCSDped2/Train/Train001/001.tif": _png_like(".tif", noise[0]),
        f"{base}/UCSDped2/Train/Train001/002.tif": _png_like(".tif", noise[1]),
        f"{base}/UCSDped2/Test/Test001/001.tif": _png_like(".tif", noise[2]),
        f"{base}/UCSDped2/Test/Test001/002.tif": _png_like(".tif", noise[3]),
        f"{base}/UCSDped2/Test/Test001_gt/001.bmp": _png_like(".bmp", np.zeros((240, 360), np.uint8)),
        f"{base}/UCSDped2/Test/Test001_gt/002.bmp": _png_like(".bmp", np.zeros((240, 360), np.uint8)),
        f"{base}/UCSDped2/Test/UCSDped2.m": b"TestDataset = {};\nTestDataset{1}.gt_frame = [1:2];\n",
        f"{base}/UCSDped1/Train/Train001/001.tif": _png_like(".tif", noise[0][:8, :8]),
    }
    avenue = {
        "Avenue Dataset/training_videos/01.avi": b"RIFF fake training video",
        "Avenue Dataset/testing_videos/01.avi": b"RIFF fake testing video",
        "Avenue Dataset/testing_vol/vol01.mat": b"MATLAB 5.0 fake",
    }
    gt = {"ground_truth_demo/testing_label_mask/1_label.mat": b"MATLAB 5.0 fake mask"}
    return {UCSD: _tar_gz(ucsd), AVENUE: _zip(avenue), AVENUE_GT: _zip(gt)}


@pytest.fixture(scope="module")
def archives() -> dict[str, bytes]:
    return make_archives()


def _free_port() -> int:
    """A localhost port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------------
# local server
# --------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        srv: _Server = self.server  # type: ignore[assignment]
        with srv.lock:
            srv.log.append((self.path, self.headers.get("Range")))
            step = srv.plan.pop(0) if srv.plan else ("ok", 0)
        data = srv.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        if step[0] == "status":
            self.send_error(step[1])
            return
        status, start = 200, 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.range_support:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if srv.range_support:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if step[0] == "break":
            # Send only part of the announced body, then drop the connection.
            self.wfile.write(body[: step[1]])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self.plan: list[tuple[str, int]] = []  # per-request behaviour, consumed in order
        self.range_support = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server(archives):
    srv = _Server()
    srv.files.update(archives)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(dl, "TIMEOUT_S", 5.0)


def _sources(server: _Server, archives: dict[str, bytes], **sha_override: str) -> dict[str, list[dl.Archive]]:
    """The real SOURCES with URLs pointing at the local server and sha256 of the fabricated archives."""
    out: dict[str, list[dl.Archive]] = {}
    for name, items in dl.SOURCES.items():
        out[name] = [
            dataclasses.replace(
                a,
                url=f"{server.base}/{a.filename}",
                sha256=sha_override.get(name, _sha(archives[a.filename])),
            )
            for a in items
        ]
    return out


# --------------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------------


def test_ped2_download_unpack_and_skip_on_rerun(tmp_path, server, archives, capsys):
    root = tmp_path / "ped2"
    sources = _sources(server, archives)

    assert dl.download_dataset("ped2", root, progress=False, sources=sources) == root.absolute()
    assert (root / "Train" / "Train001" / "001.tif").is_file()
    assert (root / "Test" / "Test001_gt" / "002.bmp").is_file()
    assert (root / "Test" / "UCSDped2.m").is_file()
    assert not (root / "UCSDped1").exists() and not (root / "UCSD_Anomaly_Dataset.v1p2").exists()
    assert cv2.imread(str(root / "Train" / "Train001" / "001.tif"), cv2.IMREAD_GRAYSCALE).shape == (240, 360)
    assert (root / ".downloads" / "ped2.unpacked").is_file()
    assert (root / ".downloads" / UCSD).is_file() and not (root / ".downloads" / f"{UCSD}.part").exists()
    assert not list(root.glob(".unpack-*")), "temporary folder left behind"
    assert server.log == [(f"/{UCSD}", None)]
    capsys.readouterr()

    dl.download_dataset("ped2", root, progress=False, sources=sources)
    assert len(server.log) == 1, "the rerun must not contact the server"
    assert "skipping" in capsys.readouterr().err


def test_marker_gone_but_archive_present_reunpacks_without_download(tmp_path, server, archives, capsys):
    root = tmp_path / "ped2"
    sources = _sources(server, archives)
    dl.download_dataset("ped2", root, progress=False, sources=sources)
    (root / ".downloads" / "ped2.unpacked").unlink()
    capsys.readouterr()

    dl.download_dataset("ped2", root, progress=False, sources=sources)
    assert len(server.log) == 1
    assert "not downloading again" in capsys.readouterr().err
    assert (root / "Test" / "UCSDped2.m").is_file()


def test_avenue_two_archives(tmp_path, server, archives):
    root = tmp_path / "avenue"
    dl.download_dataset("Avenue", root, progress=False, sources=_sources(server, archives))
    assert (root / "training_videos" / "01.avi").read_bytes() == b"RIFF fake training video"
    assert (root / "testing_videos" / "01.avi").is_file()
    assert (root / "testing_vol" / "vol01.mat").is_file()
    assert (root / "ground_truth_demo" / "testing_label_mask" / "1_label.mat").is_file()
    assert not (root / "Avenue Dataset").exists()
    assert sorted(p for p, _ in server.log) == [f"/{AVENUE}", f"/{AVENUE_GT}"]


def test_wrong_sha256_is_refused_and_nothing_unpacked(tmp_path, server, archives):
    root = tmp_path / "ped2"
    wrong = "0" * 64
    with pytest.raises(SSMTLError) as err:
        dl.download_dataset("ped2", root, progress=False, sources=_sources(server, archives, ped2=wrong))
    msg = str(err.value)
    assert wrong in msg and _sha(archives[UCSD]) in msg and UCSD in msg
    assert not (root / "Train").exists() and not (root / "Test").exists()
    assert not (root / ".downloads" / UCSD).exists() and not (root / ".downloads" / f"{UCSD}.part").exists()
    assert (root / ".downloads" / f"{UCSD}.bad").is_file()
    assert not (root / ".downloads" / "ped2.unpacked").exists()


def test_broken_connection_is_resumed_with_range(tmp_path, server, archives):
    root = tmp_path / "ped2"
    cut = 100_000
    assert len(archives[UCSD]) > 3 * cut
    server.plan = [("break", cut)]
    dl.download_dataset("ped2", root, progress=False, sources=_sources(server, archives))
    assert server.log == [(f"/{UCSD}", None), (f"/{UCSD}", f"bytes={cut}-")]
    assert _sha((root / ".downloads" / UCSD).read_bytes()) == _sha(archives[UCSD])
    assert (root / "Train" / "Train001").is_dir()


def test_give_up_keeps_part_and_rerun_resumes(tmp_path, server, archives, monkeypatch):
    monkeypatch.setattr(dl, "MAX_ATTEMPTS", 2)
    root = tmp_path / "ped2"
    sources = _sources(server, archives)
    server.plan = [("break", 123_456), ("status", 503), ("status", 503)]
    with pytest.raises(SSMTLError) as err:
        dl.download_dataset("ped2", root, progress=False, sources=sources)
    part = root / ".downloads" / f"{UCSD}.part"
    assert sources["ped2"][0].url in str(err.value) and "resumes" in str(err.value)
    on_disk = part.stat().st_size
    assert on_disk == 123_456

    dl.download_dataset("ped2", root, progress=False, sources=sources)
    assert server.log[-1] == (f"/{UCSD}", f"bytes={on_disk}-")
    assert _sha((root / ".downloads" / UCSD).read_bytes()) == _sha(archives[UCSD])


def test_server_without_range_support_restarts_from_zero(tmp_path, server, archives):
    server.range_support = False
    root = tmp_path / "ped2"
    part = root / ".downloads" / f"{UCSD}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not the start of the archive")
    server.plan = [("break", 50_000)]  # and a broken first try, which must also restart from 0
    dl.download_dataset("ped2", root, progress=False, sources=_sources(server, archives))
    assert [r for _, r in server.log] == ["bytes=44-", "bytes=50000-"]
    assert _sha((root / ".downloads" / UCSD).read_bytes()) == _sha(archives[UCSD])
    assert (root / "Test" / "UCSDped2.m").is_file()


def test_complete_part_file_answered_416_is_accepted(tmp_path, server, archives):
    root = tmp_path / "ped2"
    part = root / ".downloads" / f"{UCSD}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archives[UCSD])
    dl.download_dataset("ped2", root, progress=False, sources=_sources(server, archives))
    assert server.log == [(f"/{UCSD}", f"bytes={len(archives[UCSD])}-")]
    assert (root / "Train" / "Train001").is_dir()


def test_http_404_names_the_url(tmp_path, server, archives):
    sources = _sources(server, archives)
    sources["ped2"] = [dataclasses.replace(sources["ped2"][0], url=f"{server.base}/missing.tar.gz")]
    with pytest.raises(SSMTLError, match=r"HTTP 404 .*missing\.tar\.gz"):
        dl.download_dataset("ped2", tmp_path / "ped2", progress=False, sources=sources)


def test_unreachable_server_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "MAX_ATTEMPTS", 1)
    url = f"http://127.0.0.1:{_free_port()}/{UCSD}"
    sources = {"ped2": [dataclasses.replace(dl.SOURCES["ped2"][0], url=url)]}
    with pytest.raises(SSMTLError, match="rerunning the same command resumes") as err:
        dl.download_dataset("ped2", tmp_path / "ped2", progress=False, sources=sources)
    assert url in str(err.value) and "cannot connect" in str(err.value)


def test_shanghaitech_explains_manual_route(tmp_path):
    with pytest.raises(SSMTLError) as err:
        dl.download_dataset("shanghaitech", tmp_path)
    msg = str(err.value)
    for needle in (
        "StevenLiuWen/ano_pred_cvpr2018",
        "Future Frame Prediction",
        "training/videos/SS_VVVV.avi",
        "testing/frames/SS_VVVV/NNN.jpg",
        "testing/test_frame_mask/SS_VVVV.npy",
        "testing/test_pixel_mask/SS_VVVV.npy",
        "--root",
    ):
        assert needle in msg


def test_unknown_dataset(tmp_path):
    with pytest.raises(SSMTLError, match="ped2"):
        dl.download_dataset("ucf-crime", tmp_path)


@pytest.mark.parametrize("evil", ["../evil", "UCSD_Anomaly_Dataset.v1p2/../../evil", "/tmp/ssmtl-evil-abs"])
def test_tar_member_escaping_the_target_is_refused(tmp_path, server, evil):
    payload = _tar_gz(
        {
            "UCSD_Anomaly_Dataset.v1p2/UCSDped2/Train/Train001/001.tif": b"x",
            evil: b"pwned",
            "UCSD_Anomaly_Dataset.v1p2/UCSDped2/Test/UCSDped2.m": b"y",
        }
    )
    server.files[UCSD] = payload
    root = tmp_path / "data" / "ped2"
    sources = {
        "ped2": [
            dataclasses.replace(dl.SOURCES["ped2"][0], url=f"{server.base}/{UCSD}", sha256=_sha(payload))
        ]
    }
    with pytest.raises(SSMTLError, match="Refusing to unpack"):
        dl.download_dataset("ped2", root, progress=False, sources=sources)
    assert not (tmp_path / "data" / "evil").exists() and not (root.parent.parent / "evil").exists()
    assert not Path("/tmp/ssmtl-evil-abs").exists()
    assert not (root / "Train").exists() and not list(root.glob(".unpack-*"))
    assert not (root / ".downloads" / "ped2.unpacked").exists()


def test_tar_symlink_pointing_outside_is_refused(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        link = tarfile.TarInfo("UCSD_Anomaly_Dataset.v1p2/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
        tar.addfile(link)
    path = tmp_path / UCSD
    path.write_bytes(out.getvalue())
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(SSMTLError, match="Refusing to unpack"):
        dl.unpack_archive(path, dl.SOURCES["ped2"][0], root, "ped2", progress=False)


def test_users_own_folder_is_not_overwritten(tmp_path, server, archives):
    root = tmp_path / "ped2"
    (root / "Train").mkdir(parents=True)
    with pytest.raises(SSMTLError, match="was not created by `ssmtl download`"):
        dl.download_dataset("ped2", root, progress=False, sources=_sources(server, archives))
    assert server.log == [], "must stop before downloading"


def test_interrupted_unpack_is_redone(tmp_path, server, archives, monkeypatch):
    """A crash between moving Test/ and Train/ must not block the rerun (Test/ is ours, not the user's)."""
    root = tmp_path / "ped2"
    sources = _sources(server, archives)
    real_replace = dl.os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):
        if Path(dst).name == "Train":  # Test/ is moved first (sorted order), then Train/
            calls["n"] += 1
            raise KeyboardInterrupt  # simulates the process being killed mid-move
        return real_replace(src, dst)

    monkeypatch.setattr(dl.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        dl.download_dataset("ped2", root, progress=False, sources=sources)
    monkeypatch.setattr(dl.os, "replace", real_replace)
    assert calls["n"] == 1 and (root / "Test").is_dir() and not (root / "Train").exists()

    dl.download_dataset("ped2", root, progress=False, sources=sources)
    assert (root / "Test" / "UCSDped2.m").is_file() and (root / "Train" / "Train001").is_dir()
    assert len(server.log) == 1
