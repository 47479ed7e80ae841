"""Decoding: a bad file's reason reads the same on every run (no object address in it)."""

from __future__ import annotations

import re

from test_data import materialise, png, truncated_jpeg

from visionbench.data import load_dataset
from visionbench.data.decode import decode, probe_size

BAD = {
    "empty": b"",
    "html saved as .jpg": b"<!DOCTYPE html><html><body>404</body></html>",
    "random bytes": bytes(range(256)) * 4,
    "truncated jpeg": truncated_jpeg(),
    "truncated png": png((1, 2, 3), size=64)[:60],
}
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}|<_io\.|object at")


def test_bad_bytes_give_a_reason_without_an_object_repr():
    reasons = {name: decode(blob, None) for name, blob in BAD.items()}
    assert all(r.startswith("not a readable image") for r in reasons.values())
    assert {n: r for n, r in reasons.items() if ADDRESS.search(r)} == {}
    # the same on every call, as a prediction CSV or a data report needs
    assert {name: decode(blob, None) for name, blob in BAD.items()} == reasons


def test_html_and_empty_files_say_what_they_were():
    assert "empty file" in decode(b"", None)
    assert "<!DOCTYPE" in decode(BAD["html saved as .jpg"], None)


def test_skipped_files_of_a_dataset_carry_clean_reasons(tmp_path):
    files = {f"train/{c}/{i}.png": png((9 * i, 50, 50)) for c in ("a", "b") for i in range(3)}
    files |= {f"train/a/{name.replace(' ', '_')}.jpg": blob for name, blob in BAD.items()}
    ds = load_dataset(f"folder:{materialise(files, tmp_path, 'zip')}", None)
    assert len(ds.skipped) == len(BAD)
    assert not [s for s in ds.skipped if ADDRESS.search(s["reason"])]


def test_probe_size_is_the_first_image_that_decodes():
    blobs = [b"junk", "cannot read the file", png((1, 2, 3), size=8), png((1, 2, 3), size=4)]
    assert probe_size(blobs) == (8, 8)
    assert probe_size(iter([b"junk"])) is None
