"""`python -m visionbench` runs the CLI; `torchrun -m visionbench` too."""

from .cli import main

main()
