"""Datasets: a registry of sources, the decode-once array cache, and the tensor-resident loader."""

from .cache import Dataset, Split
from .loader import TensorLoader, channel_stats, stratified_split
from .sources import SOURCES, data_roots, download_dataset, get_source, load_dataset

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
