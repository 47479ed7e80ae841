"""The array cache: a build killed while writing leaves a temp folder; later builds remove it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

import visionbench
from visionbench.data import cache

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
