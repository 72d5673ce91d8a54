"""``python -m torchinfer.datasets --task detect --n 500 --seed 123 --out DIR``: write a shapes
dataset (see torchinfer.datasets.shapes)."""

from .shapes import main

main()
