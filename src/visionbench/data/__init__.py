"""Datasets: a registry of sources, the decode-once array cache, and the tensor-resident loader."""

from . import official, tiny_imagenet  # noqa: F401  (they register their sources)
from .cache import Dataset, Split
from .sources import SOURCES, data_roots, download_dataset, get_source, load_dataset
from .split import channel_stats, stratified_split

__all__ = [
    "SOURCES",
    "Dataset",
    "Split",
    "TensorLoader",
    "channel_stats",
    "data_roots",
    "download_dataset",
    "get_source",
    "load_dataset",
    "stratified_split",
]


def __getattr__(name: str):
    # the loader needs torch (seconds to import); `visionbench data info` does not
    if name == "TensorLoader":
        from .loader import TensorLoader

        return TensorLoader
    raise AttributeError(name)
