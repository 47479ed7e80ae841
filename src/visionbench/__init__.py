"""visionbench: train, evaluate and report image classifiers, fast and reproducibly.

The Python API (visionbench/api/) is here, loaded on first use so that the CLI starts fast:

    import visionbench as vb
    run = vb.train(data="digits", model="small_cnn", epochs=2, **{"optim.lr": 0.05})
"""

import sys
import types

__version__ = "0.1.0"

API = (
    "train", "resume", "load", "runs", "compare", "ensemble", "study", "sweep", "lr_find", "report",
    "resolve", "Run", "Ensemble", "Comparison", "Figure", "Result",
)  # fmt: skip


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'visionbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])


class Package(types.ModuleType):
    """`vb.runs` is the API's function, though `visionbench.runs` is also a subpackage (the run
    records): importing the subpackage sets the package's attribute, which this ignores."""

    @property
    def runs(self):
        from .api import runs

        return runs

    @runs.setter
    def runs(self, value) -> None:
        pass


sys.modules[__name__].__class__ = Package
