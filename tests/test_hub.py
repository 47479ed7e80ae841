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
    the full Content-Length, then closes; server.stall sends nothing until the test ends;
    server.drip sends the body a byte every 50 ms (a per-read timeout never fires)."""

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
        if body and self.server.drip:
            for i in range(len(data)):
                if self.server.done.wait(0.05):
                    return
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
        elif body:
            self.wfile.write(data[: self.server.cut])

    def handle(self):
        try:
            super().handle()
        except ConnectionError:
            pass  # the client gave up (timed out): what the interrupted-download tests do

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.headers, srv.requests = {}, {}, []
    srv.cut, srv.stall, srv.drip, srv.done = None, False, False, threading.Event()
    srv.url = f"http://127.0.0.1:{srv.server_port}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.done.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Path:
    """TORCH_HOME and the Hugging Face cache in tmp; downloads allowed."""
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads HF_HOME when imported: point its cache there too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(
        huggingface_hub.constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf" / "a"), raising=False
    )
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


@pytest.mark.parametrize("failure", ["cut", "stall", "drip", "refused"])
def test_an_interrupted_download_leaves_nothing_and_says_how_to_fix(
    caches, server, monkeypatch, squeezenet, failure
):
    """Within its stall limit (no byte for 0.5 s here) and its deadline (1.5 s here, for the
    whole download: a server that drips a byte every 50 ms never trips a per-read timeout)."""
    url = publish(server, monkeypatch, squeezenet[1])
    server.cut = len(squeezenet[1]) // 2 if failure == "cut" else None  # fewer bytes than Content-Length
    server.stall, server.drip = failure == "stall", failure == "drip"
    monkeypatch.setenv("VISIONBENCH_DOWNLOAD_STALL", "0.5")
    monkeypatch.setenv("VISIONBENCH_DOWNLOAD_DEADLINE", "1.5")
    if failure == "refused":  # nothing listens there any more
        server.shutdown()
        server.server_close()
    start = time.perf_counter()
    with pytest.raises(VisionbenchError) as e:
        create_model("squeezenet1_0", num_classes=10, pretrained=True)
    assert time.perf_counter() - start < 3
    message = str(e.value)
    assert url in message and "model.pretrained=false" in message
    assert str(tv.weight_file("squeezenet1_0")[0]) in message  # where to place it by hand
    expected = {
        "cut": "cut short: 2",
        "stall": "timed out: no bytes for 0.5 s",
        "drip": "timed out: not complete after 1.5 s",
        "refused": "cannot download the pretrained weights for squeezenet1_0",
    }
    assert expected[failure] in message
    if failure in ("stall", "drip"):  # the fix names the limit to raise
        assert "VISIONBENCH_DOWNLOAD_" + ("STALL" if failure == "stall" else "DEADLINE") in e.value.fix
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
    var = "HF_HUB_OFFLINE" if flag == "HF_HUB_OFFLINE" else "VISIONBENCH_OFFLINE"
    allow = (
        "unset HF_HUB_OFFLINE" if flag == "HF_HUB_OFFLINE" else "drop --offline / unset VISIONBENCH_OFFLINE"
    )
    assert (e.value.what, e.value.where, e.value.fix) == (
        f"pretrained weights for squeezenet1_0 are not on this machine and downloads are off ({var}=1)",
        str(path),
        f"download {url} and place it at that path (or set TORCH_HOME), or use model.pretrained=false; "
        f"or allow downloads ({allow})",
    )
    assert server.requests == []
    set_offline(False)  # allows downloads again, but not against the user's HF_HUB_OFFLINE
    assert offline() == (flag == "HF_HUB_OFFLINE")


@pytest.fixture(scope="module")
def test_resnet() -> tuple[dict, bytes]:
    """timm's test_resnet (0.5M parameters) as published: 3 channels, 1000 classes."""
    import timm

    torch.manual_seed(0)
    state = timm.create_model("test_resnet").state_dict()
    return state, torch_bytes(state)


def check_timm_filters(model, state: dict) -> None:
    """timm's load adapted the stem to one channel (summed over RGB), dropped the 1000-class
    head and loaded the rest."""
    assert torch.allclose(model.conv1[0].weight, state["conv1.0.weight"].sum(1, keepdim=True))
    assert model.fc.weight.shape == (10, state["fc.weight"].shape[1])
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    report = model.weights_report
    assert report["adapted"] == ["conv1.0.weight"] and report["reset"] == ["fc.weight", "fc.bias"]


def test_timm_weights_at_a_url_load_through_timms_filters(caches, server, monkeypatch, test_resnet):
    import dataclasses

    from visionbench.models import timm_zoo

    state, data = test_resnet
    server.files["/w/test_resnet-0.pth"] = data
    cfg = dataclasses.replace(
        timm_zoo.pretrained_cfg("test_resnet"), hf_hub_id=None, url=f"{server.url}/w/test_resnet-0.pth"
    )
    monkeypatch.setattr(timm_zoo, "pretrained_cfg", lambda name: cfg)
    for _ in range(2):
        check_timm_filters(
            create_model("timm:test_resnet", num_classes=10, in_chans=1, pretrained=True), state
        )
    assert server.requests == ["GET /w/test_resnet-0.pth"] and checkpoints(caches) == ["test_resnet-0.pth"]


@pytest.fixture
def hf_server(server, monkeypatch, test_resnet):
    """`server` as the Hugging Face hub, holding timm/test_resnet.r160_in1k's model.safetensors
    (the HEAD answer names its commit and its sha256 as huggingface_hub expects)."""
    import huggingface_hub.constants
    from safetensors.torch import save

    data = save(test_resnet[0])
    path = "/timm/test_resnet.r160_in1k/resolve/main/model.safetensors"
    server.files[path] = data
    server.headers[path] = {"X-Repo-Commit": "c" * 40, "ETag": f'"{sha256(data)}"'}
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    return server


def test_timm_weights_download_into_the_hugging_face_cache_once(caches, hf_server, test_resnet):
    for _ in range(2):
        check_timm_filters(
            create_model("timm:test_resnet", num_classes=10, in_chans=1, pretrained=True), test_resnet[0]
        )
    files = [r.split()[0] for r in hf_server.requests if "/resolve/" in r]  # not its /api/ queries
    assert files == ["HEAD", "GET"]  # the second time: none
    assert list(
        (caches / "hf" / "hub").glob("models--timm--test_resnet.r160_in1k/snapshots/*/model.safetensors")
    )


def test_timm_weights_that_fail_their_sha256_are_removed(caches, hf_server):
    for headers in hf_server.headers.values():
        headers["ETag"] = f'"{"0" * 64}"'
    with pytest.raises(VisionbenchError, match="fail their checksum"):
        create_model("timm:test_resnet", num_classes=10, pretrained=True)
    assert not [p for p in (caches / "hf" / "hub").rglob("*") if p.is_file() and p.parent.name == "blobs"]


def test_timm_offline_or_unreachable_gives_the_clear_error(caches, hf_server, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VisionbenchError, match="timm:test_resnet are not on this machine") as e:
        create_model("timm:test_resnet", num_classes=10, pretrained=True)
    assert e.value.where == hub.HF_CACHE and "model.weights=PATH" in e.value.fix
    assert hf_server.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda s: None)  # its 5 retries: 24 s
    hf_server.shutdown()
    hf_server.server_close()
    with pytest.raises(
        VisionbenchError, match="cannot download the pretrained weights for timm:test_resnet"
    ) as e:
        create_model("timm:test_resnet", num_classes=10, pretrained=True)
    assert hf_server.url in str(e.value) and "model.pretrained=false" in str(e.value)


def test_timm_vits_are_built_for_the_runs_input_size_and_resample_pretrained_positions(
    caches, server, monkeypatch
):
    """A ViT published at 160 px, asked for at 32 px: built with a 32-px patch grid (no assert
    on the first batch), its pretrained position embeddings resampled by timm's filter, the
    rest loaded; a CNN takes any size and is built as published."""
    import dataclasses

    import timm

    from visionbench.models import timm_zoo

    torch.manual_seed(0)
    state = timm.create_model("test_vit").state_dict()
    server.files["/w/test_vit-0.pth"] = torch_bytes(state)
    cfg = dataclasses.replace(
        timm_zoo.pretrained_cfg("test_vit"), hf_hub_id=None, url=f"{server.url}/w/test_vit-0.pth"
    )
    monkeypatch.setattr(timm_zoo, "pretrained_cfg", lambda name: cfg)
    model = create_model("timm:test_vit", num_classes=10, img_size=32, pretrained=True)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    grid = 32 // model.patch_embed.patch_size[0]
    assert model.pos_embed.shape[1] == grid * grid + model.num_prefix_tokens < state["pos_embed"].shape[1]
    assert torch.equal(model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    for pretrained in (False, True):  # too small for one patch: the fix names the size that works
        with pytest.raises(VisionbenchError, match="cannot be built for 8 px") as e:
            create_model("timm:test_vit", num_classes=10, img_size=8, pretrained=pretrained)
        assert "model.input_size=160" in e.value.fix


def assert_damaged(e, name: str, path: Path) -> None:
    """The one message for a damaged weight file, with a fix that works (the tests follow it)."""
    assert isinstance(e, hub.DamagedWeights)
    assert e.what.startswith(f"the pretrained weights for {name} on disk are damaged (")
    assert e.where == str(path) and e.fix.startswith(f"delete {path} (it is damaged")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_torchvision_file_in_the_cache_says_delete_it_and_that_works(
    caches, server, monkeypatch, squeezenet, damage
):
    url = publish(server, monkeypatch, squeezenet[1])
    path = tv.weight_file("squeezenet1_0")[0]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>not weights</html>" if damage == "garbage" else squeezenet[1][:100_000])
    with pytest.raises(VisionbenchError) as e:
        create_model("squeezenet1_0", num_classes=10, pretrained=True)
    assert_damaged(e.value, "squeezenet1_0", path)
    assert "sha256" in e.value.what and server.requests == []
    path.unlink()  # the fix
    create_model("squeezenet1_0", num_classes=10, pretrained=True)
    assert server.requests == [f"GET /models/{url.rsplit('/', 1)[1]}"]


def test_timm_weights_at_a_url_are_checked_against_their_download(caches, server, monkeypatch, test_resnet):
    """timm's URLs carry no sha256: the file must keep the digest it had when downloaded."""
    import dataclasses

    from visionbench.models import timm_zoo

    server.files["/w/test_resnet-0.pth"] = test_resnet[1]
    cfg = dataclasses.replace(
        timm_zoo.pretrained_cfg("test_resnet"), hf_hub_id=None, url=f"{server.url}/w/test_resnet-0.pth"
    )
    monkeypatch.setattr(timm_zoo, "pretrained_cfg", lambda name: cfg)
    create_model("timm:test_resnet", num_classes=10, pretrained=True)
    path = caches / "torch" / "hub" / "checkpoints" / "test_resnet-0.pth"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(VisionbenchError) as e:
        create_model("timm:test_resnet", num_classes=10, pretrained=True)
    assert_damaged(e.value, "timm:test_resnet", path)
    path.unlink()
    create_model("timm:test_resnet", num_classes=10, pretrained=True)
    path.write_bytes(b"garbage never downloaded here")  # a file put there by hand: timm cannot read it
    with pytest.raises(VisionbenchError) as e:
        create_model("timm:test_resnet", num_classes=10, pretrained=True)
    assert_damaged(e.value, "timm:test_resnet", path)
    assert "weights_only" not in str(e.value)


def test_a_damaged_hugging_face_blob_says_delete_it_and_that_works(caches, hf_server):
    create_model("timm:test_resnet", num_classes=10, pretrained=True)
    (blob,) = [p for p in (caches / "hf" / "hub").rglob("*") if p.is_file() and p.parent.name == "blobs"]
    blob.write_bytes(b"cut")
    with pytest.raises(VisionbenchError) as e:
        create_model("timm:test_resnet", num_classes=10, pretrained=True)
    assert_damaged(e.value, "timm:test_resnet", blob)
    blob.unlink()
    create_model("timm:test_resnet", num_classes=10, pretrained=True)
    assert blob.is_file()


def test_a_study_substitutes_only_for_weights_that_cannot_be_had(caches, server, monkeypatch, squeezenet):
    """Offline and missing: our pretraining stands in. Damaged on disk: the error says so."""
    from visionbench.commands.study import pretrained_available
    from visionbench.config import resolve_config

    publish(server, monkeypatch, squeezenet[1])
    cfg = resolve_config([], ["model.name=squeezenet1_0", "model.pretrained=true"])
    set_offline(True)
    assert pretrained_available(cfg) is False
    path = tv.weight_file("squeezenet1_0")[0]
    path.parent.mkdir(parents=True)
    path.write_bytes(squeezenet[1][:1000])
    with pytest.raises(hub.DamagedWeights):
        pretrained_available(cfg)


@pytest.mark.parametrize("failure", ["stall", "drip", "cut"])
def test_a_hugging_face_endpoint_that_stalls_drips_or_cuts_is_one_clear_error_in_time(
    caches, hf_server, monkeypatch, failure
):
    """A hub that never answers (stall limit), drips (deadline) or cuts the body short (httpx's
    RemoteProtocolError, after huggingface_hub's own retries): one error, nothing left behind."""
    hf_server.stall, hf_server.drip = failure == "stall", failure == "drip"
    hf_server.cut = 1000 if failure == "cut" else None
    monkeypatch.setenv("VISIONBENCH_DOWNLOAD_STALL", "0.5")
    monkeypatch.setenv("VISIONBENCH_DOWNLOAD_DEADLINE", "1.5")
    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub's pauses between its retries
    start = time.perf_counter()
    with pytest.raises(VisionbenchError) as e:
        create_model("timm:test_resnet", num_classes=10, pretrained=True)
    assert time.perf_counter() - start < 4
    assert e.value.what.startswith(
        "the download of the pretrained weights for timm:test_resnet timed out"
        if failure != "cut"
        else "cannot download the pretrained weights for timm:test_resnet: RemoteProtocolError"
    )
    assert hf_server.url in e.value.where and "model.pretrained=false" in e.value.fix
    if failure != "cut":
        assert "VISIONBENCH_DOWNLOAD_" in e.value.fix
    assert not [p for p in (caches / "hf" / "hub").rglob("*") if p.is_file() and "blobs" in p.parts]


@pytest.mark.slow  # a child process that imports torch and huggingface_hub: ~5 s, more on busy cores
def test_sigterm_during_a_hugging_face_download_leaves_no_partial_file(caches, hf_server):
    """huggingface_hub removes its *.incomplete file in a `finally`, which SIGTERM's default
    action never reaches: during a download SIGTERM unwinds, then the process dies of it."""
    import os
    import signal
    import subprocess
    import sys

    hf_server.drip = True
    code = (
        "from visionbench.models.hub import hf_file; "
        "hf_file('timm:test_resnet', 'timm/test_resnet.r160_in1k', ('model.safetensors',))"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    hf = {
        "HF_ENDPOINT": hf_server.url,
        "HF_HOME": str(caches / "hf"),
        "HF_HUB_CACHE": str(caches / "hf" / "hub"),
    }
    env = {**os.environ, "PYTHONPATH": src, **hf}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    partial = lambda: list((caches / "hf").rglob("*.incomplete"))
    try:
        deadline = time.monotonic() + 120  # the child imports torch and timm: slow on busy cores
        while not partial() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert partial(), f"the download never started (exit {proc.poll()})"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        proc.kill()
    assert partial() == []
