"""Webdataset image-text shards (`data.name = "webdataset"`), streamed through grain with exact resume.

What open_clip's `get_wds_dataset` does (open_clip_train/data.py), as a checkpointable iterator:
  - `data.shards`: brace notation `/d/{00000..00331}.tar`, `::` joins several sources (`/a/{0..9}.tar::/b/{0..3}.tar`),
    local paths or fsspec URLs (tar_samples.open_shard); `data.val_shards` the same for evaluation;
  - each epoch a seeded permutation of all shards; process p of P (jax.process_index/count) takes positions
    p, p + P, ... of it and grain worker w of W (`data.num_workers`) every W-th of those: the processes read disjoint
    shards whose union is the 1-process epoch (needs at least P * max(W, 1) shards);
  - `data.resampled` (open_clip's `--dataset-resampled`): shards drawn with replacement, seeded per (process, worker,
    draw); `data.shard_weights` ("1::2", open_clip's `--train-data-upsampling-factors`, only with resampled): each
    shard of source i is drawn with weight w_i, so source i gets a share w_i * n_i / sum_j w_j * n_j of the draws;
  - a bounded in-memory shuffle buffer of `data.shuffle_buffer` samples (webdataset's `shuffle`: the buffer fills,
    then each output is a seeded uniform pick from it, replaced by the next sample read); it drains at the end of
    an epoch, so an epoch is exactly a permutation of its shards' samples;
  - samples: an image (`jpg`, `png`, `jpeg` or `webp`) and a caption (`txt`); `json` is ignored.
Examples are `image` (an RGB PIL image, as decoded) and `captions` [str], then cropped and tokenized as Flickr8k's
(image_text.train_transform, pipeline.preprocess): the batch is `image` float32 [b, S, S, 3], `tokens` int32 [b, L].

JPEG draft (`data.jpeg_draft`, on by default; open_clip does not do it): a JPEG larger than the crop needs is
decoded at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling (PIL `Image.draft`), the largest reduction at which
every random-resized-crop box that can be drawn for it (image_text.draft_factor, from the header's size,
data.image_size and data.crop_scale[0]) still spans >= data.image_size pixels each way; the box is drawn on the
full size, as without the draft, and the bicubic resize then runs from the reduced image (always a reduction or
1:1, as from the full image). Pixels differ from a full decode + bicubic by about a grey level of 255 on average
(tests/test_webdataset.py checks it against PIL's bicubic of the same box from the full decode); decode + crop
took 1.6-2.1x less CPU where it applies (photograph-like JPEGs: 256 px to 64, 512 px to 112, 1024 px to 224).
Nothing changes where the smallest possible box is < 2x the crop (256 px images at image_size 224, or above 104).
The reduction is a function of the image's header and the config only: runs and resumes are deterministic.
data.jpeg_draft=False decodes every image at full size (open_clip's pixels).

Exact resume: the iterator state (`get_state`, stored in the checkpoint like grain's) is {epoch, shard (position in
this worker's shard order), offset (byte offset of the next sample in that shard), emitted (samples output this
epoch: seeds the buffer pick and the augmentation), buffer [[shard, offset], ...] (where each buffered sample
starts: re-read on restore), seen, bad}: a run restored from it sees exactly the samples, in the same order, with
the same crops, that it would have seen.

Bad input (`data.skip_bad`, default True for this source; mmjax/data/bad_input.py): a sample without an image or
a caption, an image that does not decode, a truncated or corrupt tar (the samples before the damage are kept) and a
shard that cannot be opened each count as one bad example in `seen`/`bad` (logged as train/data_bad in
metrics.jsonl); with skip_bad=False the first one raises one line naming the shard and member. More than
`data.max_bad_fraction` bad among the examples seen (counted per process and worker, over at least 100 examples)
stops the run.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Sequence

import grain
import numpy as np

from mmjax.data import DatasetEntry, bad_input, image_text
from mmjax.data.image_files import IMAGE_EXTS, BadImage, decode_image, decode_pil
from mmjax.data.tar_samples import Sample, ShardDamage, iter_samples
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS

CONFIG_KEYS = dict(shards="", val_shards="", shard_weights="", resampled=False, shuffle_buffer=1000,
                   max_bad_fraction=0.01, corpus_examples=100_000, jpeg_draft=True)
TEXT_EXT = "txt"
MIN_SEEN = 100          # max_bad_fraction applies from this many examples seen on (one bad image never stops a run)
_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)\}")


# --------------------------------------------------------------------------------------------------- shard lists
def expand_braces(pattern: str) -> list[str]:
  """Bash-style brace expansion as open_clip uses it (the `braceexpand` package): `{000..003}` (zero padded as
  written), `{a,b}`, nested and several per pattern: "d/{0..1}-{x,y}.tar" -> d/0-x.tar d/0-y.tar d/1-x.tar ..."""
  depth, open_at = 0, -1
  for i, ch in enumerate(pattern):
    if ch == "{":
      depth, open_at = depth + 1, i if depth == 0 else open_at
    elif ch == "}" and depth:
      depth -= 1
      if depth == 0:
        head, body, tail = pattern[:open_at], pattern[open_at + 1:i], pattern[i + 1:]
        m = _RANGE.fullmatch("{" + body + "}")
        if m:
          a, b = int(m.group(1)), int(m.group(2))
          width = max(len(m.group(1)), len(m.group(2))) if m.group(1).startswith("0") else 0
          step = 1 if b >= a else -1
          choices = [str(v).zfill(width) for v in range(a, b + step, step)]
        else:
          choices = _split_top(body)
          if len(choices) == 1:                    # "{x}": not an expansion, kept as written
            return [head + "{" + c + "}" + t for c in expand_braces(body) for t in expand_braces(tail)]
        return [head + c + t for choice in choices for c in expand_braces(choice) for t in expand_braces(tail)]
  return [pattern]


def _split_top(body: str) -> list[str]:
  out, depth, cur = [], 0, ""
  for ch in body:
    if ch == "," and depth == 0:
      out.append(cur)
      cur = ""
      continue
    depth += ch == "{"
    depth -= ch == "}"
    cur += ch
  return out + [cur]


def parse_shards(spec: str, weights: str | Sequence[float] = "", *, key: str = "data.shards"
                 ) -> tuple[list[str], list[float]]:
  """`a/{0..2}.tar::b.tar` -> (shard paths, a weight per shard): open_clip's `expand_urls`, with the weights of
  `data.shard_weights` ("1::2" or a sequence, one per `::` source; default all 1)."""
  sources = [s.strip() for s in str(spec).split("::") if s.strip()]
  if not sources:
    raise MmjaxError(f"config key {key} is empty; give the shards, e.g. --config.{key}='/data/cc3m/{{00000..00331}}"
                     f".tar'")
  if isinstance(weights, str):
    ws = [float(w) for w in weights.split("::") if w.strip()] if weights.strip() else [1.0] * len(sources)
  else:
    ws = [float(w) for w in weights] or [1.0] * len(sources)
  if len(ws) != len(sources) or any(not w >= 0 for w in ws) or not any(ws):
    raise MmjaxError(f"data.shard_weights={weights!r} must give one non-negative weight per '::' source of {key} "
                     f"({len(sources)} sources), not all zero")
  paths, per_shard = [], []
  for source, w in zip(sources, ws):
    expanded = expand_braces(source)
    paths += expanded
    per_shard += [w] * len(expanded)
  return paths, per_shard


# --------------------------------------------------------------------------------------------------- the stream
@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """Everything that fixes a process's sample stream (picklable: it travels to grain worker processes)."""
  shards: tuple[str, ...]
  weights: tuple[float, ...]
  seed: int = 0
  resampled: bool = False
  shuffle_buffer: int = 1000
  process_index: int = 0
  process_count: int = 1
  skip_bad: bool = True
  max_bad_fraction: float = 0.01
  draft_size: int = 0                 # > 0: JPEGs decoded reduced for a random-resized crop to this size (module doc)
  draft_scale: float = 1.0            # ... whose smallest area fraction is this (data.crop_scale[0])


class SampleStream:
  """The endless sample stream of one (process, worker): `next()` -> {image (an RGB PIL image, decoded at 1/f of
  its full size), full_hw (H, W of the full image), reduced_by (f: 1, or 2, 4, 8 with spec.draft_size), captions
  [str], __key__, __url__, _rng (a seed for the augmentation)}; `get_state()` / `set_state()` resume exactly."""

  def __init__(self, spec: StreamSpec, worker_index: int = 0, worker_count: int = 1):
    self.spec, self.worker = spec, (int(worker_index), int(worker_count))
    readers = spec.process_count * worker_count
    if not spec.resampled and len(spec.shards) < readers:
      raise MmjaxError(f"data.shards has {len(spec.shards)} shards, fewer than the {spec.process_count} processes x "
                       f"{worker_count} data workers that each need one; write more shards, lower data.num_workers "
                       f"or set data.resampled=True")
    self.rank = spec.process_index + spec.process_count * self.worker[0]   # this reader among all of them
    self.readers = readers
    if spec.resampled:
      w = np.asarray(spec.weights, np.float64)
      self._p = w / w.sum()
    self._order: tuple[int, list[int]] | None = None
    self.epoch, self.shard, self.offset, self.emitted, self.seen, self.bad = 0, 0, 0, 0, 0, 0
    self.buffer: list[Sample] = []
    self._refs: list[tuple[int, int]] = []      # (shard position, start offset) of each buffered sample
    self._refs_pending = (0, 0)                 # the ref of the sample `_read` returned last
    self._gen: Iterator | None = None
    self._empty_shards = 0
    self._draft = self._draft_factor if spec.draft_size > 0 else None

  def _draft_factor(self, height: int, width: int) -> int:
    return image_text.draft_factor(height, width, self.spec.draft_size, (float(self.spec.draft_scale), 1.0))

  # ------------------------------------------------------------------ shard order
  def shard_path(self, epoch: int, k: int) -> str | None:
    """The k-th shard this reader opens in `epoch` (None: its shards of the epoch are done)."""
    spec = self.spec
    if spec.resampled:
      rng = np.random.default_rng([spec.seed, 0x5A4D, self.rank, k])
      return spec.shards[int(rng.choice(len(spec.shards), p=self._p))]
    if self._order is None or self._order[0] != epoch:
      perm = np.random.default_rng([spec.seed, 0x0D3E, epoch]).permutation(len(spec.shards))
      self._order = (epoch, perm[spec.process_index::spec.process_count][self.worker[0]::self.worker[1]].tolist())
    order = self._order[1]
    return spec.shards[order[k]] if k < len(order) else None

  # ------------------------------------------------------------------ reading
  def _read(self) -> Sample | None:
    """The next good-so-far raw sample of this epoch (None: the epoch's shards are done); counts bad ones."""
    while True:
      path = self.shard_path(self.epoch, self.shard)
      if path is None:
        return None
      if self._gen is None:
        self._gen = iter_samples(path, self.offset)
      item = next(self._gen, None)
      if item is None or isinstance(item, ShardDamage):
        self._gen, self.shard, self.offset = None, self.shard + 1, 0
        if isinstance(item, ShardDamage):
          self.seen += 1
          self._bad(item.where, item.reason)
        self._empty_shards += 1
        if self._empty_shards > 2 * len(self.spec.shards) + 100:
          raise MmjaxError(f"no readable sample in {self._empty_shards} shards in a row of data.shards (e.g. {path}); "
                           f"check the paths and that the shards hold key.jpg + key.txt members")
        continue
      self.offset = item.end
      self.seen += 1
      image_ext = next((e for e in IMAGE_EXTS if e in item.files), None)
      if image_ext is None or TEXT_EXT not in item.files:
        missing = "an image (jpg/png/jpeg/webp)" if image_ext is None else "a caption (txt)"
        self._bad(f"{path}:{item.key}", f"sample without {missing}; it has {sorted(item.files) or 'no members'}")
        continue
      self._empty_shards = 0
      self._refs_pending = (self.shard, item.start)
      return item

  def _bad(self, where: str, reason: str) -> None:
    self.bad += 1
    spec = self.spec
    if not spec.skip_bad:
      raise MmjaxError(f"data.shards: {where}: {reason}; fix or remove it, or set data.skip_bad=True to skip and "
                       f"count bad examples")
    if self.bad > spec.max_bad_fraction * max(self.seen, MIN_SEEN):
      raise MmjaxError(f"{self.bad} of the {self.seen} examples seen are bad, more than data.max_bad_fraction="
                       f"{spec.max_bad_fraction}; the last: {where}: {reason}; fix the shards or raise "
                       f"data.max_bad_fraction")

  def _fill(self) -> None:
    while len(self.buffer) < max(1, self.spec.shuffle_buffer):
      item = self._read()
      if item is None:
        return
      self.buffer.append(item)
      self._refs.append(self._refs_pending)

  def __next__(self) -> dict[str, Any]:
    while True:
      self._fill()
      if not self.buffer:                    # the epoch's shards are read and the buffer drained
        self.epoch, self.shard, self.offset, self.emitted = self.epoch + 1, 0, 0, 0
        continue
      key = [self.spec.seed, self.rank, self.epoch, self.emitted]
      pick = int(np.random.default_rng([0xB0FF, *key]).integers(len(self.buffer))) if len(self.buffer) > 1 else 0
      sample, ref = self.buffer[pick], self._refs[pick]
      self.buffer[pick], self._refs[pick] = self.buffer[-1], self._refs[-1]
      self.buffer.pop()
      self._refs.pop()
      self.emitted += 1
      path = self.shard_path(self.epoch, ref[0])
      image_ext = next(e for e in IMAGE_EXTS if e in sample.files)
      try:
        image, full_hw, f = decode_pil(sample.files[image_ext], f"{path}:{sample.key}.{image_ext}", self._draft)
        caption = sample.files[TEXT_EXT].decode("utf-8").strip()
      except BadImage as e:
        self._bad(*str(e).split(": ", 1))
        continue
      except UnicodeDecodeError as e:
        self._bad(f"{path}:{sample.key}.txt", f"caption is not UTF-8 ({e})")
        continue
      return {"image": image, "full_hw": full_hw, "reduced_by": f, "captions": [caption], "__key__": sample.key,
              "__url__": path, "_rng": (0xA06, *key)}

  def __iter__(self):
    return self

  # ------------------------------------------------------------------ state
  def get_state(self) -> dict[str, Any]:
    return {"kind": "webdataset", "epoch": self.epoch, "shard": self.shard, "offset": self.offset,
            "emitted": self.emitted, "seen": self.seen, "bad": self.bad,
            "buffer": [[int(k), int(o)] for k, o in self._refs]}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("kind") != "webdataset":
      raise MmjaxError(f"the checkpoint's data state is not a webdataset iterator's ({sorted(state)}); resume with "
                       f"the data config the run was started with")
    self.epoch, self.shard, self.offset = int(state["epoch"]), int(state["shard"]), int(state["offset"])
    self.emitted, self.seen, self.bad = int(state["emitted"]), int(state["seen"]), int(state["bad"])
    self._gen, self.buffer, self._refs = None, [], []
    for k, start in state["buffer"]:
      path = self.shard_path(self.epoch, int(k))
      item = next(iter_samples(path, int(start)), None) if path is not None else None
      if not isinstance(item, Sample):
        raise MmjaxError(f"resuming: the sample at byte {start} of shard {path} (in the checkpoint's shuffle buffer) "
                         f"cannot be read back: the shards changed since the checkpoint; restore them or start a "
                         f"new workdir")
      self.buffer.append(item)
      self._refs.append((int(k), int(start)))


class _Iterator(grain.DatasetIterator):
  def __init__(self, stream: SampleStream):
    super().__init__()
    self.stream = stream

  def __next__(self):
    return next(self.stream)

  def get_state(self):
    return self.stream.get_state()

  def set_state(self, state):
    self.stream.set_state(state)


class WebDataset(grain.IterDataset):
  """A grain IterDataset of raw samples (see SampleStream); grain's `mp_prefetch` gives each worker its slice
  (`set_slice`), and each worker reads its own shards."""

  def __init__(self, spec: StreamSpec):
    super().__init__()
    self.spec, self.worker = spec, (0, 1)

  def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
    del sequential_slice
    self.worker = (sl.start or 0, sl.step or 1)

  def __iter__(self) -> grain.DatasetIterator:
    return _Iterator(SampleStream(self.spec, *self.worker))

  def __str__(self) -> str:
    return f"WebDataset({len(self.spec.shards)} shards, worker {self.worker})"


# --------------------------------------------------------------------------------------------------- registry
def stream_spec(data_cfg, *, seed: int, process_index: int = 0, process_count: int = 1) -> StreamSpec:
  shards, weights = parse_shards(data_cfg.get("shards", ""), data_cfg.get("shard_weights", ""))
  resampled = bool(data_cfg.get("resampled", False))
  if not resampled and len(set(weights)) > 1:
    raise MmjaxError("data.shard_weights applies only to shards drawn with replacement; set data.resampled=True "
                     "(as open_clip's --train-data-upsampling-factors needs --dataset-resampled)")
  buffer = int(data_cfg.get("shuffle_buffer", 1000))
  frac = float(data_cfg.get("max_bad_fraction", 0.01))
  if buffer < 0 or not 0 <= frac <= 1:
    raise MmjaxError(f"data.shuffle_buffer={buffer} must be >= 0 and data.max_bad_fraction={frac} in [0, 1]")
  draft = bool(data_cfg.get("jpeg_draft", True)) and int(data_cfg.get("image_size", 0)) > 0
  return StreamSpec(tuple(shards), tuple(weights), seed=int(seed) % 2**32, resampled=resampled,
                    shuffle_buffer=buffer, process_index=process_index, process_count=process_count,
                    skip_bad=bad_input.skip_bad(data_cfg), max_bad_fraction=frac,
                    draft_size=int(data_cfg.get("image_size", 0)) if draft else 0,
                    draft_scale=float(tuple(data_cfg.get("crop_scale", (0.9, 1.0)))[0]))


def train_stream(data_cfg, *, seed: int, process_index: int = 0, process_count: int = 1) -> WebDataset:
  return WebDataset(stream_spec(data_cfg, seed=seed, process_index=process_index, process_count=process_count))


def first_samples(paths: Sequence[str], limit: int | None, exts: frozenset[str] | None = None,
                  decode: bool = True) -> Iterator[tuple[str, Sample]]:
  """(shard, sample) of the good samples of `paths` in order (bad ones skipped), at most `limit`."""
  n = 0
  for path in paths:
    for item in iter_samples(path, 0, exts):
      if limit is not None and n >= limit:
        return
      if not isinstance(item, Sample) or TEXT_EXT not in item.files:
        continue
      ext = next((e for e in IMAGE_EXTS if e in item.files), None)
      if decode:
        if ext is None:
          continue
        try:
          decode_image(item.files[ext], path)
          item.files[TEXT_EXT].decode("utf-8")
        except (BadImage, UnicodeDecodeError):
          continue
      n += 1
      yield path, item


class FirstSamplesSource:
  """Random access to the first good samples of some shards (evaluation, and the shapes a run starts from):
  `image` uint8 [H, W, 3], `captions` [str]. The encoded samples are held in memory."""

  def __init__(self, paths: Sequence[str], limit: int | None):
    self.samples = list(first_samples(paths, limit))
    if not self.samples:
      raise MmjaxError(f"no readable sample (key.jpg + key.txt) in the shards {paths[0]} ... ({len(paths)} shards)")

  def __len__(self) -> int:
    return len(self.samples)

  def __getitem__(self, index: int) -> dict:
    path, s = self.samples[int(index)]
    ext = next(e for e in IMAGE_EXTS if e in s.files)
    return {"image": decode_image(s.files[ext], f"{path}:{s.key}.{ext}"),
            "captions": [s.files[TEXT_EXT].decode("utf-8").strip()]}


TRAIN_PEEK = 64     # the train split as a random-access source: its first samples (shapes, a first batch)


def source(data_cfg, split: str) -> FirstSamplesSource:
  if split == "train":
    return FirstSamplesSource(parse_shards(data_cfg.get("shards", ""))[0], TRAIN_PEEK)
  if not data_cfg.get("val_shards", ""):
    raise MmjaxError(f"data.name='webdataset' has no {split!r} split: set data.val_shards (open_clip's --val-data) "
                     f"or evals.names=''")
  return FirstSamplesSource(parse_shards(data_cfg.val_shards, key="data.val_shards")[0], None)


def corpus(data_cfg) -> list[str]:
  """The captions of the first `data.corpus_examples` samples of data.shards, in shard order (images not read)."""
  paths = parse_shards(data_cfg.get("shards", ""))[0]
  limit = int(data_cfg.get("corpus_examples", 100_000))
  return [s.files[TEXT_EXT].decode("utf-8", "replace").strip()
          for _, s in first_samples(paths, limit, frozenset({TEXT_EXT}), decode=False)]


DATASETS.register("webdataset")(DatasetEntry(
    source=source, corpus=corpus, train_transform=image_text.train_transform,
    eval_transform=image_text.eval_transform, stream=train_stream, config_keys=CONFIG_KEYS))
