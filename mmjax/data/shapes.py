"""Shapes: an embedded, procedurally generated image-caption dataset (no files on disk).

Each image shows 1-4 coloured objects on a dark background, one per cell of a 3x3 grid; the caption names the
colour, shape, size and grid position of every object, e.g. "a small red circle at the top left and a large
blue square at the bottom". Examples are pure functions of (seed, split, index), so the stream is unbounded,
reproducible and needs no storage; the "train" and "test" splits use different seeds.

Registered as `DATASETS.get("shapes")`, a `mmjax.data.DatasetEntry` with
  `.source(data_cfg, split) -> ShapesSource` (reads data_cfg.image_size, min_shapes, max_shapes, noise_std
  and optionally data_cfg.seed and data_cfg.caption_fields) and `.corpus(data_cfg) -> list[str]` (captions to
  train the tokenizer on). `data.caption_fields` (a data-set key, CONFIG_KEYS; default all four,
  "colour,shape,size,position") names what each clause of a caption says: "colour,shape" gives "a red circle and
  a blue square"; colour and shape are always named. The images, labels and the draws of sentence and clause
  templates are the same whatever it is (only the words change), so runs that differ in it see the same scenes.
Other datasets (flickr8k, avmnist) register a `DatasetEntry` the same way.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from mmjax.data import DatasetEntry
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS = {                     # name -> RGB in [0, 1]; insertion order is the label order
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.80, 0.15),
    "blue": (0.15, 0.35, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.60, 0.15, 0.85),
    "orange": (1.00, 0.55, 0.00),
    "cyan": (0.10, 0.90, 0.90),
    "white": (0.95, 0.95, 0.95),
}
SIZES = ("small", "medium", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")

FIELDS = ("colour", "shape", "size", "position")   # what a caption clause can name (data.caption_fields)

SPLIT_SALTS = {"train": 0x5EED, "test": 0x7E57}
SIZE_FRACTIONS = (0.48, 0.68, 0.92)  # object radius as a fraction of half a grid cell
MAX_ROTATION = 0.3                   # radians, for every shape but the circle

# Templates: a caption is a sentence template around clauses joined with " and ".
SENTENCES = ("{}", "there is {}", "an image of {}", "a picture showing {}")
CLAUSES = ("{a} {size} {colour} {shape} at the {position}",
           "{a} {size} {colour} {shape} in the {position}",
           "{a} {colour} {shape}, {size} sized, at the {position}",
           "{a} {colour} {shape} at the {position}, {size}")
# How a clause template loses a field that data.caption_fields leaves out (size first, then position).
_DROP = {"size": ((", {size} sized,", ""), (", {size}", ""), ("{size} ", "")),
         "position": ((" at the {position}", ""), (" in the {position}", ""))}

_COLOUR_RGB = np.asarray(list(COLOURS.values()), np.float32)
_COLOUR_NAMES = tuple(COLOURS)
_S60 = float(np.sin(np.pi / 3))
_TRI_NORMALS = np.asarray([(0.0, 1.0), (_S60, -0.5), (-_S60, -0.5)], np.float32)   # (x, y), y points down


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
  """Rendering options; `seed` selects a different (but equally deterministic) dataset."""
  image_size: int = 64
  min_shapes: int = 1
  max_shapes: int = 1
  noise_std: float = 0.03
  seed: int = 0
  caption_fields: tuple[str, ...] = FIELDS   # what each caption clause names; always colour and shape

  def __post_init__(self):
    if self.image_size < 16:
      raise MmjaxError(f"data.image_size={self.image_size} is too small for shapes; use at least 16")
    if not 1 <= self.min_shapes <= 4:
      raise MmjaxError(f"data.min_shapes={self.min_shapes} must be in [1, 4]")
    if not self.min_shapes <= self.max_shapes <= 4:
      raise MmjaxError(f"data.max_shapes={self.max_shapes} must be in [min_shapes={self.min_shapes}, 4]")
    if self.noise_std < 0:
      raise MmjaxError(f"data.noise_std={self.noise_std} must be >= 0")
    fields = ",".join(self.caption_fields)
    if any(f not in FIELDS for f in self.caption_fields) or not {"colour", "shape"} <= set(self.caption_fields):
      raise MmjaxError(f"data.caption_fields={fields!r} must name colour and shape and may add size and position "
                       f"(comma-separated words of {', '.join(FIELDS)})")


# The data.* keys of the shapes data set, with ShapesConfig's defaults (base_config's data block holds them: shapes
# is the default data set): objects per scene, pixel noise, what a caption clause names.
CONFIG_KEYS = {"min_shapes": ShapesConfig.min_shapes, "max_shapes": ShapesConfig.max_shapes,
               "noise_std": ShapesConfig.noise_std, "caption_fields": ",".join(FIELDS)}


def _rng(index: int, split: str, cfg: ShapesConfig) -> np.random.Generator:
  if split not in SPLIT_SALTS:
    raise MmjaxError(f"unknown shapes split {split!r}; use one of {', '.join(SPLIT_SALTS)}")
  if not 0 <= index < 2**31 - 1:
    raise MmjaxError(f"shapes index {index} out of range [0, 2**31 - 1)")
  return np.random.default_rng(np.random.SeedSequence([cfg.seed, SPLIT_SALTS[split], int(index)]))


def _sample_objects(rng: np.random.Generator, cfg: ShapesConfig) -> list[dict]:
  count = int(rng.integers(cfg.min_shapes, cfg.max_shapes + 1))
  cells = np.sort(rng.choice(9, size=count, replace=False))           # reading order
  shape, colour, size = rng.integers(0, len(SHAPES), count), rng.integers(0, 8, count), rng.integers(0, 3, count)
  jitter, angle = rng.uniform(-1, 1, (count, 2)), rng.uniform(-MAX_ROTATION, MAX_ROTATION, count)
  half = cfg.image_size / 6
  objects = []
  for k in range(count):
    radius = SIZE_FRACTIONS[size[k]] * half
    row, col = divmod(int(cells[k]), 3)
    cx, cy = (2 * col + 1) * half, (2 * row + 1) * half
    cx, cy = cx + 0.9 * (half - radius) * jitter[k, 0], cy + 0.9 * (half - radius) * jitter[k, 1]
    objects.append(dict(shape=int(shape[k]), colour=int(colour[k]), size=int(size[k]), position=int(cells[k]),
                        centre=(float(cx), float(cy)), radius=float(radius),
                        angle=0.0 if shape[k] == 0 else float(angle[k])))
  return objects


def sample_scene(index: int, split: str, cfg: ShapesConfig) -> list[dict]:
  """The objects of example `index` (before rendering): dicts with label ints `shape`, `colour`, `size`,
  `position` and geometry `centre` (x, y) in pixels, `radius` in pixels, `angle` in radians."""
  return _sample_objects(_rng(index, split, cfg), cfg)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
  return np.arange(size, dtype=np.float32) + 0.5    # pixel centres


@functools.lru_cache(maxsize=4)
def _noise_bank(n: int) -> np.ndarray:
  """Fixed standard-normal samples; each image reads a random window (cheaper than fresh normals)."""
  return np.random.default_rng(0x401CE).standard_normal(max(2**20, 8 * n), dtype=np.float32)


def _sdf(shape: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
  """Signed distance in pixels (negative inside) of a shape of radius r centred at 0; u right, v down."""
  au, av = np.abs(u), np.abs(v)
  if shape == 0:     # circle
    return np.sqrt(u * u + v * v) - 0.9 * r
  if shape == 1:     # square
    return np.maximum(au, av) - 0.72 * r
  if shape == 2:     # triangle, pointing up, vertices at distance r
    n = _TRI_NORMALS
    return np.maximum(np.maximum(n[0, 0] * u + n[0, 1] * v, n[1, 0] * u + n[1, 1] * v),
                      n[2, 0] * u + n[2, 1] * v) - 0.5 * r
  if shape == 3:     # five-pointed star: fold into one half-spike and measure to its straight edge
    sector = 2 * np.pi / 5
    phi = np.mod(np.arctan2(u, -v), sector)
    phi = np.minimum(phi, sector - phi)
    rho = np.sqrt(u * u + v * v)
    qx, qy = rho * np.cos(phi), rho * np.sin(phi)
    p1 = 0.46 * r * np.array([np.cos(np.pi / 5), np.sin(np.pi / 5)])
    e = p1 - np.array([r, 0.0])
    n = np.array([-e[1], e[0]]) / np.hypot(*e)
    n = n if n[0] > 0 else -n
    return n[0] * (qx - r) + n[1] * qy
  if shape == 4:     # diamond: a rhombus 0.6 as wide as tall (a playing-card diamond), so that no rotation of the
    # square (at most MAX_ROTATION) looks like it; the factor makes it a distance (|grad| = 1)
    return (au / 0.6 + av - r) * np.float32(0.6 / np.sqrt(1 + 0.36))
  w = max(0.32 * r, 1.0)   # cross (plus sign); arms at least 2 px wide so small crosses stay legible
  return np.minimum(np.maximum(au - r, av - w), np.maximum(au - w, av - r))


def render_example(index: int, split: str, cfg: ShapesConfig) -> dict:
  """Renders example `index` of `split`.

  Returns: `image` uint8 [H, W, 3]; `caption` str; `shape`, `colour`, `size`, `position` int32 [max_shapes]
  (label indices into SHAPES, COLOURS, SIZES, POSITIONS, padded with -1); `count` int32 []; `index` int64 [].
  """
  rng = _rng(index, split, cfg)
  objects = _sample_objects(rng, cfg)
  caption = _caption(rng, objects, cfg.caption_fields)  # drawn before the pixels: `caption_corpus` need not render
  s = cfg.image_size
  grid = _grid(s)
  # Dark, varied background: a random tint plus a faint linear gradient in a random direction.
  base = rng.uniform(0.02, 0.2, 3).astype(np.float32)
  theta, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.1, 3).astype(np.float32)
  centred = (grid - s / 2) / s
  ramp = (centred * np.float32(np.cos(theta)))[None, :] + (centred * np.float32(np.sin(theta)))[:, None]
  img = ramp[..., None] * amp + base
  for obj in objects:
    (cx, cy), r = obj["centre"], obj["radius"]
    y0, y1 = max(int(cy - r - 2), 0), min(int(cy + r + 3), s)
    x0, x1 = max(int(cx - r - 2), 0), min(int(cx + r + 3), s)
    dx, dy = grid[None, x0:x1] - cx, grid[y0:y1, None] - cy
    c, sn = np.cos(obj["angle"]), np.sin(obj["angle"])
    cover = np.clip(0.5 - _sdf(obj["shape"], c * dx + sn * dy, c * dy - sn * dx, r), 0.0, 1.0)[..., None]
    patch = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = patch + cover * (_COLOUR_RGB[obj["colour"]] - patch)
  if cfg.noise_std > 0:
    bank = _noise_bank(img.size)
    start = int(rng.integers(0, bank.size - img.size))
    img += np.float32(cfg.noise_std) * bank[start:start + img.size].reshape(img.shape)
  image = np.clip(img * 255 + 0.5, 0, 255.5).astype(np.uint8)

  labels = np.full((4, cfg.max_shapes), -1, np.int32)
  for k, obj in enumerate(objects):
    labels[:, k] = obj["shape"], obj["colour"], obj["size"], obj["position"]
  return dict(image=image, caption=caption, shape=labels[0], colour=labels[1], size=labels[2],
              position=labels[3], count=np.asarray(len(objects), np.int32), index=np.asarray(index, np.int64))


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def _clause(template: str, shape: int, colour: int, size: int, position: int) -> str:
  first = template.split("{a} ")[1].split(" ")[0]    # the word right after the article
  words = dict(shape=SHAPES[shape], colour=_COLOUR_NAMES[colour], size=SIZES[size], position=POSITIONS[position])
  return template.format(a=_article(first.format(**words)), **words)


@functools.lru_cache(maxsize=16)
def clause_templates(fields: tuple[str, ...] = FIELDS) -> tuple[str, ...]:
  """CLAUSES without the fields not in `fields` ("{a} {colour} {shape} at the {position}" for no size); one per
  CLAUSES entry (some may repeat), so the template draws do not depend on `fields`."""
  out = []
  for template in CLAUSES:
    for field in ("size", "position"):
      if field not in fields:
        for old, new in _DROP[field]:
          template = template.replace(old, new)
    out.append(template.rstrip(","))
  return tuple(out)


def _caption(rng: np.random.Generator, objects: list[dict], fields: tuple[str, ...] = FIELDS) -> str:
  sentence = SENTENCES[int(rng.integers(len(SENTENCES)))]
  picks = rng.integers(len(CLAUSES), size=len(objects))
  templates = clause_templates(tuple(fields))
  clauses = [_clause(templates[t], o["shape"], o["colour"], o["size"], o["position"]) for t, o in zip(picks, objects)]
  return sentence.format(" and ".join(clauses))


class ShapesSource:
  """A grain random-access source of `render_example` dicts for one split."""

  def __init__(self, cfg: ShapesConfig, split: str = "train", length: int = 2**31 - 1):
    if split not in SPLIT_SALTS:
      raise MmjaxError(f"unknown shapes split {split!r}; use one of {', '.join(SPLIT_SALTS)}")
    if not 0 < length <= 2**31 - 1:
      raise MmjaxError(f"shapes length {length} must be in [1, 2**31 - 1]")
    self.cfg, self.split, self.length = cfg, split, length

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not -self.length <= index < self.length:
      raise IndexError(f"index {index} out of range for ShapesSource of length {self.length}")
    return render_example(index % self.length, self.split, self.cfg)

  def __repr__(self) -> str:
    return f"ShapesSource(cfg={self.cfg!r}, split={self.split!r}, length={self.length})"


def caption_corpus(cfg: ShapesConfig, n: int = 5000) -> list[str]:
  """Captions of the first `n` train examples plus every template filled with every word (full vocabulary)."""
  texts = []
  for i in range(n):
    rng = _rng(i, "train", cfg)
    texts.append(_caption(rng, _sample_objects(rng, cfg), cfg.caption_fields))
  templates = clause_templates(tuple(cfg.caption_fields))
  for sentence in SENTENCES:
    for t, clause in enumerate(templates):
      for i in range(len(SHAPES) * len(COLOURS)):
        shape, colour = divmod(i, len(COLOURS))
        one = _clause(clause, shape, colour, (i + t) % len(SIZES), (i + t) % len(POSITIONS))
        two = _clause(templates[(t + 1) % len(templates)], (shape + 1) % len(SHAPES), (colour + 3) % len(COLOURS),
                      i % len(SIZES), (i + 4) % len(POSITIONS))
        texts.append(sentence.format(one))
        texts.append(sentence.format(f"{one} and {two}"))
  return texts


def config_from_data(data_cfg) -> ShapesConfig:
  """A ShapesConfig from the `data` section of a run config (a ConfigDict or a dict)."""
  def key(name):
    return data_cfg.get(name, CONFIG_KEYS[name])
  return ShapesConfig(image_size=int(data_cfg["image_size"]), min_shapes=int(key("min_shapes")),
                      max_shapes=int(key("max_shapes")), noise_std=float(key("noise_std")),
                      seed=int(data_cfg.get("seed", 0)),
                      caption_fields=parse_fields(key("caption_fields")))


def parse_fields(value) -> tuple[str, ...]:
  """"colour,shape" (or a sequence of words) -> ("colour", "shape"), in FIELDS order, duplicates dropped."""
  words = [w.strip() for w in (value.split(",") if isinstance(value, str) else value) if w.strip()]
  unknown = [w for w in words if w not in FIELDS]
  if unknown:
    raise MmjaxError(f"data.caption_fields={','.join(words)!r}: unknown field(s) {', '.join(unknown)}; use "
                     f"comma-separated words of {', '.join(FIELDS)} (colour and shape always)")
  return tuple(f for f in FIELDS if f in words)


def shapes_dataset(data_cfg, split: str) -> ShapesSource:
  return ShapesSource(config_from_data(data_cfg), split)


def shapes_corpus(data_cfg) -> list[str]:
  return caption_corpus(config_from_data(data_cfg))


DATASETS.register("shapes")(DatasetEntry(source=shapes_dataset, corpus=shapes_corpus, config_keys=CONFIG_KEYS))
