"""Figures written at evaluation time (matplotlib, Agg backend: no display needed).

`image_grid` draws rows of images (e.g. original / masked / reconstruction of a masked autoencoder, He et al.
2022, Fig. 2) into one PNG, written atomically (to `path + ".tmp.png"`, then renamed).
"""
from __future__ import annotations

import os
import textwrap
from typing import Sequence

import numpy as np


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """Model-space images in [-1, 1] -> [0, 1] for display (clipped)."""
  return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def image_grid(rows: Sequence[np.ndarray], row_titles: Sequence[str], path: str, *, title: str = "",
               captions: Sequence[str] | None = None, cell_inches: float = 1.3) -> str:
  """rows: R arrays [N, H, W, 3] in [-1, 1] -> a PNG grid (R rows x N columns) at `path`; returns the path.

  captions: optional N strings printed under the columns of the last row (wrapped to the column width).
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  if len(rows) != len(row_titles) or not rows:
    raise ValueError(f"image_grid: {len(rows)} rows but {len(row_titles)} row titles")
  n = len(rows[0])
  wrapped = None
  if captions is not None:
    width = max(int(cell_inches * 22), 10)     # characters per line at font size 5
    wrapped = ["\n".join(textwrap.fill(part, width) for part in str(c).split("\n")) for c in captions]
  lines = max((w.count("\n") + 1 for w in wrapped), default=0) if wrapped else 0
  fig, axes = plt.subplots(len(rows), n, figsize=(cell_inches * n + 1.0,
                                                  cell_inches * len(rows) + 0.4 + 0.12 * lines), squeeze=False)
  for r, (images, name) in enumerate(zip(rows, row_titles)):
    images = to_unit_range(images)
    for c in range(n):
      ax = axes[r, c]
      ax.imshow(images[c], interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(name, fontsize=8)
      if wrapped is not None and r == len(rows) - 1:
        ax.set_xlabel(wrapped[c], fontsize=5)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=100, bbox_inches="tight")     # nothing clipped (captions, titles)
  plt.close(fig)
  os.replace(tmp, path)
  return path
