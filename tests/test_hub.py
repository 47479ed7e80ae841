"""Pretrained weights downloaded once into the standard caches, from an HTTP server on 127.0.0.1:
checked against their sha256, never left half-written, reused without the network, refused
offline with the message users know."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from visionbench.errors import VisionbenchError
from visionbench.models import create_model, hub, offline, set_offline
from visionbench.models import torchvision_zoo as tv


class Handler(BaseHTTPRequestHandler):
    """Serves server.files by path; server.cut sends only the first `cut` bytes of a body with
    the full Content-Length, then closes; server.stall sends nothing until the test ends."""

    def do_HEAD(self):
        self.reply(body=False)

    def do_GET(self):
        self.reply(body=True)

    def reply(self, body: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        if self.server.stall:
            self.server.done.wait(10)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        for key, value in self.server.headers.get(self.path, {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data[: self.server.cut])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.headers, srv.requests = {}, {}, []
    srv.cut, srv.stall, srv.done = None, False, threading.Event()
    srv.url = f"http://127.0.0.1:{srv.server_port}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.done.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Path:
    """TORCH_HOME in tmp; downloads allowed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("VISIONBENCH_OFFLINE", "0")  # and set_offline's changes are undone after the test
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


def torch_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def squeezenet() -> tuple[dict, bytes]:
    """A state dict with torchvision squeezenet1_0's names and shapes (5 MB) and its file bytes."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.squeezenet1_0().state_dict()
    return state, torch_bytes(state)


def publish(server, monkeypatch, data: bytes, prefix: str | None = None) -> str:
    """Serve `data` as torchvision does (`<arch>-<sha256 prefix>.pth`) and make it squeezenet1_0's
    weights URL; returns the URL."""
    name = f"squeezenet1_0-{prefix or sha256(data)[:8]}.pth"
    server.files[f"/models/{name}"] = data
    url = f"{server.url}/models/{name}"
    monkeypatch.setattr(tv, "weights_url", lambda arch: url)
    return url


def checkpoints(caches: Path) -> list[str]:
    folder = caches / "torch" / "hub" / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_torchvision_weights_download_once_then_load_from_the_cache(caches, server, monkeypatch, squeezenet):
    state, data = squeezenet
    url = publish(server, monkeypatch, data)
    model = create_model("squeezenet1_0", num_classes=10, pretrained=True)
    assert checkpoints(caches) == [url.rsplit("/", 1)[1]]
    assert torch.equal(model.features[0].weight, state["features.0.weight"])
    assert sorted(model.weights_report["skipped"])[0].startswith("classifier.1.bias")  # the 1000-class head
    again = create_model("squeezenet1_0", num_classes=10, pretrained=True)
    assert torch.equal(again.features[3].squeeze.weight, state["features.3.squeeze.weight"])
    assert server.requests == [f"GET /models/{url.rsplit('/', 1)[1]}"]  # the second time: no request


def test_a_file_that_fails_its_sha256_prefix_is_refused_and_not_kept(caches, server, monkeypatch, squeezenet):
    url = publish(server, monkeypatch, squeezenet[1], prefix="00000000")
    with pytest.raises(VisionbenchError, match="fail their checksum") as e:
        create_model("squeezenet1_0", num_classes=10, pretrained=True)
    assert e.value.where == url
    assert checkpoints(caches) == []


@pytest.mark.parametrize("failure", ["cut", "stall", "refused"])
def test_an_interrupted_download_leaves_nothing_and_says_how_to_fix(
    caches, server, monkeypatch, squeezenet, failure
):
    url = publish(server, monkeypatch, squeezenet[1])
    server.cut = len(squeezenet[1]) // 2 if failure == "cut" else None  # fewer bytes than Content-Length
    server.stall = failure == "stall"
    monkeypatch.setattr(hub, "TIMEOUT_S", 0.5)
    if failure == "refused":  # nothing listens there any more
        server.shutdown()
        server.server_close()
    start = time.perf_counter()
    with pytest.raises(VisionbenchError) as e:
        create_model("squeezenet1_0", num_classes=10, pretrained=True)
    assert time.perf_counter() - start < 5  # a stalled server times out (after 0.5 s here)
    message = str(e.value)
    assert url in message and "model.pretrained=false" in message
    if failure == "cut":
        assert "fail their checksum" in message  # the sha256 of a half file cannot match
    else:
        assert "cannot download" in message and str(tv.weight_file("squeezenet1_0")[0]) in message
    assert checkpoints(caches) == []


@pytest.mark.parametrize("flag", ["VISIONBENCH_OFFLINE", "HF_HUB_OFFLINE", "set_offline"])
def test_offline_a_missing_file_is_the_usual_error_and_nothing_is_fetched(
    caches, server, monkeypatch, squeezenet, flag
):
    url = publish(server, monkeypatch, squeezenet[1])
    if flag == "set_offline":
        set_offline(True)
    else:
        monkeypatch.setenv(flag, "1")
    assert offline()
    with pytest.raises(VisionbenchError) as e:
        create_model("squeezenet1_0", num_classes=10, pretrained=True)
    path = caches / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    assert (e.value.what, e.value.where, e.value.fix) == (
        "pretrained weights for squeezenet1_0 are not on this machine",
        str(path),
        f"download {url} and place it at that path (or set TORCH_HOME), or use model.pretrained=false",
    )
    assert server.requests == []
    set_offline(False)  # allows downloads again, but not against the user's HF_HUB_OFFLINE
    assert offline() == (flag == "HF_HUB_OFFLINE")
