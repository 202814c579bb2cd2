"""grain input pipelines: shuffled, process-sharded, checkpointable training batches and eval arrays.

Training order. The train source is shuffled over its whole index space (grain's `MapDataset.shuffle` is a
lazy index permutation: O(1) memory even for the 2**31 - 1 shapes examples), cut to a whole number of global
batches per epoch, preprocessed, batched into per-process batches of `global_batch_size // process_count`
and repeated (reshuffled each epoch). Process p then takes per-process batches p, p + P, p + 2P, ... so
at every step the per-process batches concatenated in process order are exactly the 1-process global batch,
whatever the process count.

Preprocessing: a data set whose `DatasetEntry.preprocess` is set (feature data sets: MOSI, AV-MNIST) turns its
examples into model inputs with it; image-caption data sets use `preprocess` below (image to [-1, 1], caption
tokens), which needs the run's tokenizer (data sets without a text corpus run without one: tokenizer None).

Iterator state (`it.get_state()`): with num_workers = 0 a dict `{"next_index": int}` (per-process batches
consumed); with num_workers > 0 grain's multiprocessing state (nested dicts of ints and str). Both are JSON
serialisable and `set_state` resumes exactly. A source that counts bad examples (`counts_bad`: the CSV,
image-folder and array_record sources) is wrapped in bad_input.CountingIterator, whose state holds that one
(`inner`) and the counts.
"""
from __future__ import annotations

import functools

import grain
import jax
from absl import flags
import numpy as np

from mmjax.data import fusion_data  # noqa: F401  (registers "mosi", "avmnist")
from mmjax.data import image_text  # noqa: F401  (registers "flickr8k")
from mmjax.data import shapes  # noqa: F401  (registers the "shapes" dataset)
from mmjax.data import vqa_shapes  # noqa: F401  (registers "vqa_shapes")
from mmjax.data import semi  # noqa: F401  (registers "avmnist_semi": few-label AV-MNIST)
from mmjax.data import csv_source, image_folder, webdataset  # noqa: F401  (register "csv", "image_folder", "webdataset")
from mmjax.data import array_record_source  # noqa: F401  (registers "array_record": mmjax-prepare convert's output)
from mmjax.data import bad_input
from mmjax.data import karpathy  # noqa: F401  (registers "karpathy": COCO / Flickr30k Karpathy-split JSON)
from mmjax.data.tokenizer import TOKENIZER_KINDS, Tokenizer
from mmjax.errors import MmjaxError
from mmjax.registry import DATASETS


def preprocess(example: dict, tokenizer: Tokenizer, context_length: int) -> dict:
  """Raw example -> model inputs: `image` float32 [H, W, 3] in [-1, 1], `tokens` int32 [L] of the caption;
  label arrays (`shape`, `colour`, `size`, `position`, `count`, `index`) are kept, `caption` is dropped."""
  out = {k: v for k, v in example.items() if k not in ("image", "caption", "captions")}
  out["image"] = np.multiply(example["image"], np.float32(1 / 127.5), dtype=np.float32)  # = astype * scale, one pass
  out["image"] -= np.float32(1.0)
  out["tokens"] = tokenizer.encode([example["caption"]], context_length)[0]
  return out


def _entry(data_cfg):
  return DATASETS.get(data_cfg.name, "data.name")


def has_text(data_cfg) -> bool:
  """Whether the data set has a text corpus (and so a run on it a tokenizer)."""
  return _entry(data_cfg).corpus is not None


def build_tokenizer(data_cfg) -> Tokenizer:
  """Trains the BPE tokenizer on the dataset's caption corpus with `data_cfg.vocab_size` tokens at most."""
  entry = _entry(data_cfg)
  if entry.corpus is None:
    raise MmjaxError(f"data.name={data_cfg.name!r} has no text corpus to train a tokenizer on")
  return Tokenizer.train(entry.corpus(data_cfg), int(data_cfg.vocab_size))


def tokenizer_for(config):
  """The run's tokenizer by `config.tokenizer.kind` (no `tokenizer` section: "bpe_trained"):
  "bpe_trained": mmjax.data.tokenizer's byte-level BPE trained on the data set's captions (`config.data.vocab_size`);
  "clip_bpe": OpenCLIP's tokenizer (mmjax.data.clip_bpe; merges file from `tokenizer.bpe_path`, $MMJAX_CLIP_BPE or
  an installed open_clip_torch); "hf": a local tokenizer.json (mmjax.data.hf_tokenizer; `tokenizer.path`, optional
  `tokenizer.pad_id` / `eos_id` / `bos_id` overrides, -1 = from the file).

  All three have encode(texts, context_length) -> int32 [N, L], decode, pad_id / sot_id / eot_id, vocab_size, pickle.
  """
  tcfg = config.get("tokenizer", None) or {}
  kind = tcfg.get("kind", "bpe_trained")
  if kind == "bpe_trained":
    return build_tokenizer(config.data)
  if kind == "clip_bpe":
    from mmjax.data.clip_bpe import ClipBpeTokenizer
    return ClipBpeTokenizer(tcfg.get("bpe_path", None) or None)
  if kind == "hf":
    from mmjax.data.hf_tokenizer import HfTokenizer
    if not tcfg.get("path", None):
      raise MmjaxError("tokenizer.kind='hf' needs tokenizer.path, the path of a tokenizer.json file")
    ids = {k: tcfg.get(k, None) for k in ("pad_id", "eos_id", "bos_id")}
    return HfTokenizer(tcfg["path"], **ids)
  raise MmjaxError(f"tokenizer.kind={kind!r} is unknown; use one of {', '.join(TOKENIZER_KINDS)}")


def tokenizer_from_json(text: str):
  """The tokenizer a checkpoint stored (`tok.to_json()`): a ClipBpeTokenizer's or HfTokenizer's JSON spec (a dict
  with "kind"), else the trained BPE's own tokenizers JSON (mmjax.data.tokenizer.Tokenizer)."""
  import json
  try:
    spec = json.loads(text)
  except ValueError:
    spec = None
  kind = spec.get("mmjax_tokenizer") if isinstance(spec, dict) else None
  if kind == "clip_bpe":
    from mmjax.data.clip_bpe import ClipBpeTokenizer
    return ClipBpeTokenizer.from_json(text)
  if kind == "hf":
    from mmjax.data.hf_tokenizer import HfTokenizer
    return HfTokenizer.from_json(text)
  return Tokenizer.from_json(text)


def _check_tokenizer(entry, data_cfg, tokenizer) -> None:
  if entry.preprocess is None and tokenizer is None:
    raise MmjaxError(f"data.name={data_cfg.name!r} gives captions, which need a tokenizer; got none (the data "
                     f"set's DatasetEntry has no corpus: give it one, or a preprocess of its own)")


def _prefetch(data_cfg) -> int:
  """data.prefetch, checked: >= 0 (0: no prefetching)."""
  prefetch = int(data_cfg.get("prefetch", 2))
  if prefetch < 0:
    raise MmjaxError(f"data.prefetch={prefetch} must be >= 0 (0: no prefetching)")
  return prefetch


def _read_options(data_cfg) -> grain.ReadOptions:
  prefetch = _prefetch(data_cfg)
  # Elements here are whole batches: a few threads fill a buffer of `prefetch` batches.
  return grain.ReadOptions(num_threads=min(prefetch, 4), prefetch_buffer_size=prefetch)


def make_train_iterator(data_cfg, tokenizer: Tokenizer | None, *, global_batch_size: int, seed: int,
                        process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """An endless iterator of this process's training batches (dicts of NumPy arrays, leading dim
  `global_batch_size // process_count`): `image` float32 [b, H, W, 3], `tokens` int32 [b, L] and the labels
  (or, for a data set with its own `preprocess`, that function's outputs; `tokenizer` may then be None).

  Reads data_cfg.name, context_length, num_workers (0: in this process; > 0: grain worker processes) and
  prefetch (batches buffered per reader). `seed` sets the shuffle order (each epoch is reshuffled).
  """
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise MmjaxError(f"batch_size={global_batch_size} must be a positive multiple of the process count "
                     f"{process_count}; change batch_size")
  if not 0 <= process_index < process_count:
    raise MmjaxError(f"process_index={process_index} must be in [0, process_count={process_count})")
  num_workers = int(data_cfg.get("num_workers", 0))
  if num_workers < 0:
    raise MmjaxError(f"data.num_workers={num_workers} must be >= 0 (0: load in the training process)")
  if _entry(data_cfg).stream is not None:
    return _stream_iterator(data_cfg, tokenizer, global_batch_size=global_batch_size, seed=seed,
                            process_index=process_index, process_count=process_count, num_workers=num_workers)
  source = _entry(data_cfg).source(data_cfg, "train")
  steps_per_epoch = len(source) // global_batch_size
  if steps_per_epoch == 0:
    raise MmjaxError(f"batch_size={global_batch_size} exceeds the {len(source)} training examples of "
                     f"data.name={data_cfg.name!r}; lower batch_size")
  entry = _entry(data_cfg)
  _check_tokenizer(entry, data_cfg, tokenizer)
  what = f"data.name={data_cfg.name!r} (train split)"
  ds = grain.MapDataset.source(GuardedSource(source, what)).shuffle(seed=int(seed) % 2**32)
  ds = ds[:steps_per_epoch * global_batch_size]       # whole global batches only: same epochs for any P
  ds = ds.repeat()                                     # reshuffled each epoch
  # Augmentation is seeded by (seed, global example position): a resumed run redraws the same crops.
  ds = ds.random_map(functools.partial(_train_example, transform=entry.train_transform, data_cfg=data_cfg,
                                       tokenizer=tokenizer, what=what, preprocess_fn=entry.preprocess),
                     seed=(int(seed) + 0x5EED) % 2**32)
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  ds = ds[process_index::process_count]
  it_ds = ds.to_iter_dataset(_read_options(data_cfg))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()    # grain reads its absl flags when it starts workers (outside absl.app)
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  if getattr(source, "counts_bad", False):     # batches carry `_bad`: counted, checked, and taken out here
    return bad_input.CountingIterator(iter(it_ds), bad_input.max_bad_fraction(data_cfg), what,
                                      dropped=int(getattr(source, "skipped", 0) or 0))
  return iter(it_ds)


def train_element_spec(data_cfg, tokenizer: Tokenizer | None, *, batch_size: int, seed: int = 0
                       ) -> dict[str, jax.ShapeDtypeStruct]:
  """The element spec of `make_train_iterator`'s batches of `batch_size` (this process's): {key: [b, ...] shape and
  dtype}, from one training example put through the same per-example path the iterator runs (the source's first
  example, or a stream's first, with the training transform and preprocessing), so what the model is initialised
  for is what it will be fed; no batch is taken from an iterator (its state is untouched)."""
  entry = _entry(data_cfg)
  _check_tokenizer(entry, data_cfg, tokenizer)
  kw = dict(transform=entry.train_transform, data_cfg=data_cfg, tokenizer=tokenizer, preprocess_fn=entry.preprocess)
  if entry.stream is not None:
    what = f"data.name={data_cfg.name!r} (train stream)"
    stream = entry.stream(data_cfg, seed=seed, process_index=0, process_count=1)
    example = next(iter(stream.map(functools.partial(_stream_example, what=what, **kw))), None)
  else:
    what = f"data.name={data_cfg.name!r} (train split)"
    source = entry.source(data_cfg, "train")
    example = (_train_example(GuardedSource(source, what)[0], np.random.default_rng(seed), what=what, **kw)
               if len(source) else None)
  if example is None:
    raise MmjaxError(f"{what} has no examples; check config keys data.*")
  return {k: jax.ShapeDtypeStruct((int(batch_size), *np.shape(v)), np.asarray(v).dtype)
          for k, v in example.items() if k != bad_input.BAD_KEY}


def _stream_iterator(data_cfg, tokenizer, *, global_batch_size: int, seed: int, process_index: int,
                     process_count: int, num_workers: int) -> grain.DatasetIterator:
  """Training batches of a streamed data set (`DatasetEntry.stream`): this process's examples, augmented with the
  seed each carries (`_rng`), batched to `global_batch_size // process_count`; with num_workers > 0 each grain worker
  reads its own slice of the stream (`set_slice`) and grain interleaves their batches (deterministically)."""
  entry = _entry(data_cfg)
  _check_tokenizer(entry, data_cfg, tokenizer)
  what = f"data.name={data_cfg.name!r} (train stream)"
  ds = entry.stream(data_cfg, seed=seed, process_index=process_index, process_count=process_count)
  ds = ds.map(functools.partial(_stream_example, transform=entry.train_transform, data_cfg=data_cfg,
                                tokenizer=tokenizer, what=what, preprocess_fn=entry.preprocess))
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)


def _stream_example(example: dict, **kw) -> dict:
  example = {k: v for k, v in example.items() if not k.startswith("__")}
  rng = np.random.default_rng(list(example.pop("_rng")))
  return _train_example(dict(example, _index=None), rng, **kw)


def data_counters(iterator) -> dict[str, int]:
  """{"data_seen", "data_bad"} (+ "data_dropped" when rows were dropped as a CSV was read): examples read and bad
  examples skipped so far by the training iterator of a streamed data set or of a source that counts bad examples
  (of this process; summed over its grain workers), from its state; {} for other iterators."""
  seen = bad = dropped = found = 0
  todo = [iterator.get_state()]
  while todo:
    node = todo.pop()
    if isinstance(node, dict):
      if node.get("kind") in ("webdataset", bad_input.KIND):
        seen, bad, found = seen + int(node["seen"]), bad + int(node["bad"]), 1
        dropped += int(node.get("dropped", 0))
      else:
        todo += list(node.values())
    elif isinstance(node, (list, tuple)):
      todo += [x for x in node if isinstance(x, (dict, list, tuple))]
  if not found:
    return {}
  return {"data_seen": seen, "data_bad": bad, **({"data_dropped": dropped} if dropped else {})}


class GuardedSource:
  """A source whose examples carry their index (`_index`) and whose read errors name the example and data set,
  also from inside a grain worker process (the error crosses to the trainer, which stops with it)."""

  def __init__(self, source, what: str):
    self.source, self.what = source, what

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict:
    try:
      example = self.source[index]
    except MmjaxError:
      raise
    except Exception as e:
      raise MmjaxError(f"{self.what}: reading example {int(index)} failed ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return dict(example, _index=int(index))


def _preprocessing_errors_named(fn, what: str, index):
  """fn(); an error other than MmjaxError becomes one line naming the data set/split (`what`) and the example."""
  try:
    return fn()
  except MmjaxError:
    raise
  except Exception as e:
    raise MmjaxError(f"{what}: preprocessing example {index} failed ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _train_example(example: dict, rng: np.random.Generator, *, transform, data_cfg, tokenizer: Tokenizer | None,
                   what: str, preprocess_fn=None) -> dict:
  index = example.pop("_index", None)
  bad = example.pop(bad_input.BAD_KEY, None)      # a counting source's: carried into the batch (bad_input)

  def run():
    ex = transform(example, rng, data_cfg) if transform is not None else example
    out = (preprocess_fn(ex, data_cfg) if preprocess_fn is not None
           else preprocess(ex, tokenizer, int(data_cfg.context_length)))
    return out if bad is None else dict(out, **{bad_input.BAD_KEY: np.int32(bad)})
  return _preprocessing_errors_named(run, what, index)


def _eval_read_options(data_cfg) -> grain.ReadOptions:
  threads = min(_prefetch(data_cfg), 4)    # elements are examples here: decode with a few threads
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(4 * threads, 1))


def _eval_example(example: dict, *, transform, preprocess_fn, data_cfg, what: str) -> dict:
  """One eval example: the data set's eval transform, then its own `preprocess` (if any); errors name it."""
  index = example.pop("_index", None)
  example = {k: v for k, v in example.items() if k != bad_input.BAD_KEY}

  def run():
    ex = transform(example, data_cfg) if transform is not None else example
    return preprocess_fn(ex, data_cfg) if preprocess_fn is not None else ex
  return _preprocessing_errors_named(run, what, index)


def make_eval_arrays(data_cfg, tokenizer: Tokenizer | None, num_examples: int, split: str = "test") -> dict:
  """The first `num_examples` of `split`, read through grain as training reads (reader threads: data.prefetch, at
  most 4), with the data set's eval transform (no augmentation), preprocessed and stacked: `image` float32
  [N, H, W, 3], the label arrays [N, ...], `tokens` int32 [M, L] of the M captions, `caption` a list of M str and
  `txt_to_img` int32 [M], each caption's image (M = N, txt_to_img = arange(N) for one caption per image;
  Flickr8k: M = 5 N).
  A data set with its own `preprocess`: every key of its preprocessed examples, stacked to [N, ...]
  (`tokenizer` may be None)."""
  entry = _entry(data_cfg)
  _check_tokenizer(entry, data_cfg, tokenizer)
  source = entry.source(data_cfg, split)
  if not 0 < num_examples <= len(source):
    raise MmjaxError(f"evals.num_examples={num_examples} must be in [1, {len(source)}] for the {split} split "
                     f"of data.name={data_cfg.name!r}")
  # The training path's grain pieces: the guarded source (a read error names the example), the same reader threads.
  what = f"data.name={data_cfg.name!r} ({split} split)"
  ds = grain.MapDataset.source(GuardedSource(source, what))[:num_examples]
  ds = ds.map(functools.partial(_eval_example, transform=entry.eval_transform, preprocess_fn=entry.preprocess,
                                data_cfg=data_cfg, what=what))
  examples = list(ds.to_iter_dataset(_eval_read_options(data_cfg)))
  if entry.preprocess is not None:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  per_image = [e["captions"] if "captions" in e else [e["caption"]] for e in examples]
  captions = [c for caps in per_image for c in caps]
  skip = ("image", "caption", "captions")
  out = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k not in skip}
  out["image"] = np.stack([e["image"] for e in examples]).astype(np.float32) * np.float32(1 / 127.5) - 1
  out["tokens"] = tokenizer.encode(captions, int(data_cfg.context_length))
  out["caption"] = captions
  out["txt_to_img"] = np.repeat(np.arange(len(examples), dtype=np.int32), [len(c) for c in per_image])
  return out


def first_caption_only(arrays: dict) -> dict:
  """Eval arrays with several captions per image -> one (the first) per image, as a training batch has
  (arrays without captions, of a data set with its own `preprocess`, are returned as they are)."""
  if "txt_to_img" not in arrays:
    return arrays
  first = np.searchsorted(arrays["txt_to_img"], np.arange(len(arrays["image"])))
  out = dict(arrays, tokens=arrays["tokens"][first], txt_to_img=np.arange(len(first), dtype=np.int32))
  out["caption"] = [arrays["caption"][i] for i in first]
  return out
