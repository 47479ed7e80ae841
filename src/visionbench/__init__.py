"""visionbench: train, evaluate and report image classifiers, fast and reproducibly."""

__version__ = "0.1.0"
