"""The array cache: a build killed while writing leaves a temp folder, later builds remove it;
a damaged cache is rebuilt, never used; arrays too large for the memory are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import visionbench
from visionbench.data import cache
from visionbench.errors import VisionbenchError

KEY = "0123456789abcdef0123"  # cache folders are <name>-<20 hex digits of the source key>

DIE_WHILE_SAVING = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import numpy as np
    from visionbench.data import cache

    def dying(*args, **kwargs):  # the first array written, then gone as under kill -9
        real_save(*args, **kwargs)
        os._exit(9)

    real_save, np.save = np.save, dying
    split = cache.Split(np.zeros((2, 1, 2, 2), np.uint8), np.arange(2))
    cache.save(cache.Dataset("t", ["a", "b"], {"train": split}), Path(sys.argv[1]))
    """
)


def tiny() -> cache.Dataset:
    return cache.Dataset(
        "t", ["a", "b"], {"train": cache.Split(np.zeros((2, 1, 2, 2), np.uint8), np.arange(2))}
    )


def test_a_killed_build_leaves_a_temp_folder_the_next_build_removes(tmp_path):
    root = tmp_path / "arrays"
    env = os.environ | {"PYTHONPATH": str(Path(visionbench.__file__).parents[1])}
    run = subprocess.run([sys.executable, "-c", DIE_WHILE_SAVING, str(root / f"cifar-{KEY}")], env=env)
    assert run.returncode == 9
    (left,) = root.iterdir()  # what the killed build left: a temp folder holding an array
    assert ".tmp" in left.name and any(left.iterdir())
    cache.save(tiny(), root / f"digits-{KEY}")  # a later build, of any dataset
    assert [p.name for p in root.iterdir()] == [f"digits-{KEY}"]
    assert cache.load(root / f"digits-{KEY}") is not None


def test_only_dead_or_day_old_builds_are_removed(tmp_path):
    root = tmp_path / "arrays"
    host = cache._host()
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    day_ago = time.time() - cache.STALE_AFTER_S - 60
    folders = {  # name -> (age in seconds, removed?)
        f"a-{KEY}.tmp-{gone.pid}-{host}-abcd1234": (0, True),  # its process is gone
        f"b-{KEY}.tmp-{os.getpid()}-{host}-abcd1234": (0, False),  # a build still running
        f"c-{KEY}.tmp-{gone.pid}-0badc0de-abcd1234": (0, False),  # another machine's: by age only
        f"d-{KEY}.tmp-{gone.pid}-0badc0de-abcd1234": (day_ago, True),
        f"e-{KEY}.tmpabcd1234": (0, False),  # named before the pid was in the name
        f"f-{KEY}.tmpabcd1234": (day_ago, True),
        f"folder__data_x.tmp-{KEY}": (day_ago, False),  # a cache whose dataset path has .tmp in it
    }
    for name, (age, _) in folders.items():
        (root / name).mkdir(parents=True)
        if age:
            os.utime(root / name, (day_ago, day_ago))
    removed = cache.remove_stale_builds(root)
    assert sorted(p.name for p in removed) == sorted(n for n, (_, gone_) in folders.items() if gone_)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        n for n, (_, gone_) in folders.items() if not gone_
    )


def digits_cache(lines: list[str] | None = None) -> cache.Dataset:
    from visionbench.data import load_dataset

    return load_dataset("digits", on_build=None if lines is None else lines.append)


def zero(path: Path) -> None:
    arr = np.load(path, mmap_mode="r+")
    arr[:] = 0
    arr.flush()


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def garbage(path: Path) -> None:
    path.write_text("garbage{")


@pytest.mark.parametrize(
    "damage, file, said",
    [
        (zero, "train_images.npy", "train_images.npy changed since it was written"),
        (truncate, "test_images.npy", "test_images.npy has"),
        (zero, "train_labels.npy", "train_labels.npy changed"),
        (garbage, "meta.json", "damaged: JSONDecodeError"),
    ],
)
def test_a_damaged_cache_is_rebuilt_and_said_never_used(damage, file, said):
    healthy = digits_cache()
    first = np.asarray(healthy.splits["train"].images).copy()
    damage(Path(healthy.cache) / file)
    lines: list[str] = []
    again = digits_cache(lines)
    assert said in lines[0] and "decoding the data again" in lines[0]
    assert again.fingerprint == healthy.fingerprint == cache.fingerprint(again)
    assert np.array_equal(again.splits["train"].images, first)
    assert digits_cache([]).fingerprint == healthy.fingerprint  # whole again: nothing said


def test_a_cache_written_without_file_hashes_is_rebuilt():
    folder = Path(digits_cache().cache)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]  # as written before the hashes were
    (folder / "meta.json").write_text(json.dumps(meta))
    lines: list[str] = []
    digits_cache(lines)
    assert "without file hashes" in lines[0]


def test_arrays_too_large_for_memory_are_refused_before_decoding(tmp_path, monkeypatch):
    from test_data import png

    from visionbench.data import images, load_dataset

    for cls in ("a", "b"):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "pics" / cls / f"{i}.png").write_bytes(png((9, 9, 9)))
    monkeypatch.setattr(cache, "memory_total", lambda: 4 * 2**20)  # a 4 MiB machine: 1 MiB for arrays
    monkeypatch.setattr(images, "decode_all", lambda *a, **k: pytest.fail("decoded before checking"))
    with pytest.raises(
        VisionbenchError,
        match=r"6 images at 512x512 px need 4.5 MiB as arrays after 0.\d KiB of files are read, more than 25% of the 4.0 MiB",
    ) as exc:
        load_dataset(f"folder:{tmp_path / 'pics'}", img_size=512)
    assert "data.img_size (at most 224)" in exc.value.fix
    assert "data.stream" not in exc.value.fix  # one streamed batch of 512 px images would not fit either
    monkeypatch.setattr(cache, "memory_total", lambda: 100 * 2**20)
    with pytest.raises(VisionbenchError) as exc:  # many small images: streaming them fits
        cache.check_fits(10_000, (3, 64, 64), "photos", streamable=True)
    assert (
        exc.value.fix
        == "set a smaller data.img_size (at most 24), or data.stream=true to decode each batch from the files"
    )


def test_image_files_read_into_memory_count_toward_the_bound(tmp_path, monkeypatch):
    from visionbench.data import images, load_dataset

    for cls in ("a", "b"):  # small images in large files: the files, not the arrays, are the memory
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "pics" / cls / f"{i}.png").write_bytes(png_with_padding(200_000))
    monkeypatch.setattr(cache, "memory_total", lambda: 4 * 2**20)  # 1 MiB for arrays and files
    monkeypatch.setattr(images, "decode_all", lambda *a, **k: pytest.fail("read before checking"))
    with pytest.raises(VisionbenchError, match=r"after 1.1 MiB of files are read") as exc:
        load_dataset(f"folder:{tmp_path / 'pics'}", img_size=8)
    assert "data.stream=true" in exc.value.fix  # a batch of 8 px images fits


def png_with_padding(size: int) -> bytes:
    from test_data import png

    return png((9, 9, 9)) + b"\0" * size  # PIL reads the image and ignores what follows
