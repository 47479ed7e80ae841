"""Dataset downloads (data/download.py) from an HTTP server on 127.0.0.1: refused offline
before any connection, bounded by a deadline and a stall limit, and never leaving a
`*.partial` file, not even when the process is stopped by SIGTERM."""

# ruff: noqa: F811  (the `server` fixture, imported from test_hub, is taken as an argument)
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hub import server  # noqa: F401  (the fixture: an HTTP server on 127.0.0.1)
from typer.testing import CliRunner

from visionbench.cli import app
from visionbench.data import SOURCES
from visionbench.data.download import Remote, TimedOut, Unavailable, download, file_problem
from visionbench.errors import VisionbenchError

runner = CliRunner()
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv(
        "VISIONBENCH_OFFLINE", "0"
    )  # conftest forbids downloads; set_offline's change is undone
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def serve(server, data: bytes = b"x" * 4000) -> Remote:
    server.files["/f/thing.bin"] = data
    return Remote(f"{server.url}/f/thing.bin", "thing.bin", hashlib.md5(data).hexdigest())


@pytest.mark.parametrize("flag", ["--offline", "VISIONBENCH_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_flags_stop_a_dataset_download_before_any_connection(
    flag,
    server,
    online,
    tmp_path,
    monkeypatch,
):
    for r in SOURCES["mnist"].remotes:
        server.files[f"/{r.filename}"] = b"never served"
    args = ["data", "download", "mnist", "--mirror", server.url + "/", "--data-dir", str(tmp_path)]
    if flag == "--offline":
        args = ["--offline", *args]
    else:
        monkeypatch.setenv(flag, "1")
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert server.requests == []
    out = " ".join(res.output.split())
    var = "HF_HUB_OFFLINE" if flag == "HF_HUB_OFFLINE" else "VISIONBENCH_OFFLINE"
    assert f"not on this machine and downloads are off ({var}=1)" in out
    assert f"looked for {tmp_path / 'MNIST' / 'raw' / 'train-images-idx3-ubyte.gz'}" in out
    assert "allow downloads" in out and f"unset {var}" in out
    assert not (tmp_path / "MNIST").exists()


@pytest.mark.parametrize("failure", ["stall", "drip"])
def test_a_slow_server_ends_at_the_stall_limit_or_the_deadline(
    failure,
    server,
    online,
    tmp_path,
    monkeypatch,
):
    remote = serve(server)
    server.stall, server.drip = failure == "stall", failure == "drip"
    monkeypatch.setenv("VISIONBENCH_DOWNLOAD_STALL", "0.5")
    monkeypatch.setenv("VISIONBENCH_DOWNLOAD_DEADLINE", "1")
    start = time.perf_counter()
    with pytest.raises(TimedOut) as e:
        download(remote, tmp_path / "dest")
    assert time.perf_counter() - start < 2.5
    detail, var = {
        "stall": ("no bytes for 0.5 s", "VISIONBENCH_DOWNLOAD_STALL=SECONDS, now 0.5"),
        "drip": ("not complete after 1 s", "VISIONBENCH_DOWNLOAD_DEADLINE=SECONDS, now 1"),
    }[failure]
    assert detail in e.value.what and var in e.value.fix and "--mirror" in e.value.fix
    assert e.value.where == remote.url
    assert list((tmp_path / "dest").iterdir()) == []


def test_a_refused_connection_is_unavailable(server, online, tmp_path):
    remote = serve(server)
    server.shutdown()
    server.server_close()
    with pytest.raises(Unavailable, match="cannot download thing.bin: .*refused"):
        download(remote, tmp_path / "dest")


def test_sigterm_during_a_download_leaves_no_partial_file(server, tmp_path):
    """The process still dies of SIGTERM (exit -15), as without a download running."""
    remote = serve(server, b"y" * 100_000)
    server.drip = True  # a byte every 50 ms: the download is mid-way for minutes
    dest = tmp_path / "dest"
    code = (
        "import sys; from pathlib import Path; from visionbench.data.download import Remote, download; "
        f"download(Remote({remote.url!r}, 'thing.bin', {remote.md5!r}), Path({str(dest)!r}))"
    )
    env = {**os.environ, "PYTHONPATH": SRC, "VISIONBENCH_OFFLINE": "0"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 30
        while not list(dest.glob("*.partial")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(dest.glob("*.partial")), "the download never started"
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        proc.kill()
    assert list(dest.iterdir()) == []


def test_a_files_digest_is_remembered_until_it_changes(tmp_path, monkeypatch):
    """A file on disk is hashed once, then trusted while its size and mtime are unchanged; a
    change (cut short) is hashed again and found."""
    import visionbench.data.download as dl

    path = tmp_path / "w.bin"
    path.write_bytes(b"z" * 1000)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    calls = []
    real = dl.file_digest
    monkeypatch.setattr(dl, "file_digest", lambda *a: calls.append(a) or real(*a))
    assert file_problem(path, "sha256", good[:8]) is None
    assert file_problem(path, "sha256", good[:8]) is None
    assert len(calls) == 1
    with open(path, "r+b") as f:
        f.truncate(500)
    assert "expected" in file_problem(path, "sha256", good[:8])
    # no published hash (timm's URLs): the one remembered from the download is what it must match
    assert "expected" in file_problem(path, "sha256", None)
    assert len(calls) == 3


def test_a_full_disk_during_a_download_says_so_and_leaves_nothing(server, online, small_disk):
    remote = serve(server, b"w" * 6_000_000)  # more than the 4 MiB disk holds
    with pytest.raises(VisionbenchError, match="cannot write thing.bin: No space left") as e:
        download(remote, small_disk.path / "dest")
    assert e.value.fix.startswith("free disk space")
    assert list((small_disk.path / "dest").iterdir()) == []
