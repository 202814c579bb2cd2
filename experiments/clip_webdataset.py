"""CLIP (Radford et al. 2021) on your own webdataset shards (img2dataset's output: key.jpg + key.txt [+ key.json]),
streamed from the tars with exact resume; open_clip's `--train-data` / `--val-data` / `--dataset-resampled` habits.

  python -m mmjax.main --config experiments/clip_webdataset.py --workdir runs/cc3m \\
      --config.data.shards='/data/cc3m/{00000..00331}.tar' \\
      --config.data.val_shards='/data/cc3m_val/{00000..00001}.tar'
  # several sources drawn with replacement, the second twice as often per shard (open_clip's upsampling factors):
  #   --config.data.shards='/data/cc3m/{00000..00331}.tar::/data/cc12m/{00000..01242}.tar' \\
  #   --config.data.resampled=True --config.data.shard_weights='1::2'
  # rerun the same command after a kill or preemption: it resumes on exactly the next batch.
  # for grain's global shuffle instead of a shuffle buffer: convert once, then train on the array_record shards:
  mmjax-prepare convert --from webdataset --shards '/data/cc3m/{00000..00331}.tar' --out /data/cc3m_ar
  python -m mmjax.main --config experiments/clip_webdataset.py:array_record --workdir runs/cc3m_ar \\
      --config.data.array_record_dir=/data/cc3m_ar --config.data.array_record_val_dir=/data/cc3m_val_ar

Keys (mmjax/data/webdataset.py): data.shards, data.val_shards (retrieval eval; evals.names='' without one),
data.shuffle_buffer, data.resampled, data.shard_weights, data.num_workers (grain worker processes, each reading its
own shards), data.skip_bad (on by default for this source: bad samples are skipped and counted as train/data_bad;
False: the first stops the run naming the shard and member), data.max_bad_fraction (stop past this fraction bad),
data.jpeg_draft (default True: JPEGs >= 2x the crop are decoded reduced by libjpeg; False: open_clip's full decode).
The BPE tokenizer is trained on the captions of the first data.corpus_examples samples (or put a tokenizer.json in
the workdir). Add zero-shot with --config.evals.clip.zero_shot_data=cifar10_test or =image_folder:/data/imagenet/val.

Sized like clip_flickr8k (64 px, small towers) for a CPU; on accelerators raise image_size, the towers and steps.
"""
from mmjax import config as config_lib
from mmjax.data import builders, fake_shards

SOURCES = ("webdataset", "array_record")     # the config argument's optional first word


def get_config(arg: str | None = None):
  source, arg = config_lib.split_method_arg(arg, SOURCES, "webdataset")
  arg = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.objective = "clip"
  c.total_steps = 10000
  c.batch_size = 256
  c.log_every = 50
  c.checkpoint_every = 500
  c.eval_every = 2500
  c.optim.lr = 5e-4
  c.optim.warmup_steps = 500
  c.optim.weight_decay = 0.2
  c.data.name = "webdataset"
  c.data.shards = ""
  c.data.val_shards = ""
  c.data.shuffle_buffer = 1000
  c.data.resampled = False
  c.data.shard_weights = ""
  c.data.max_bad_fraction = 0.01          # data.skip_bad: None, this source's default (True)
  c.data.image_size = 64
  c.data.context_length = 32
  c.data.vocab_size = 8192
  c.data.crop_scale = (0.9, 1.0)           # open_clip's RandomResizedCrop scale
  c.data.num_workers = 2
  c.model.embed_dim = 256
  c.model.vision = dict(image_size=64, patch_size=8, width=256, depth=6, num_heads=4, mlp_ratio=4.0, pool="cls")
  c.model.text = dict(vocab_size=8192, context_length=32, width=256, depth=4, num_heads=4, mlp_ratio=4.0)
  c.evals.num_examples = 1000
  c.evals.batch_size = 250
  c.evals.clip.zero_shot_data = ""
  if arg.runlocal:
    config_lib.runlocal(c)
    root = fake_shards.default_dir("webdataset_colours")
    c.data.shards = fake_shards.write_shards(root, num_shards=4, per_shard=12, image_size=24)
    c.data.val_shards = fake_shards.write_shards(root, num_shards=1, per_shard=16, image_size=24, seed=1,
                                                 prefix="val-")
    c.data.shuffle_buffer = 8
    c.data.num_workers = 0
    c.data.image_size = 32
    c.data.vocab_size = 512
    c.model.embed_dim = 32
    c.model.vision = dict(image_size=32, patch_size=8, width=32, depth=1, num_heads=2, mlp_ratio=2.0, pool="cls")
    c.model.text = dict(vocab_size=512, context_length=32, width=32, depth=1, num_heads=2, mlp_ratio=2.0)
    c.evals.num_examples = 8
  if source == "array_record":
    to_array_record(c, runlocal=arg.runlocal)
  return c


def to_array_record(c, runlocal: bool) -> None:
  """data.name = "array_record" (mmjax/data/array_record_source.py) in place of the webdataset keys; runlocal: the
  generated shards converted once (mmjax/data/convert.py)."""
  train, val = c.data.shards, c.data.val_shards
  for key in ("shards", "val_shards", "shuffle_buffer", "resampled", "shard_weights"):
    del c.data[key]
  c.data.name, c.data.array_record_dir, c.data.array_record_val_dir = "array_record", "", ""
  if runlocal:
    from mmjax.data import convert
    root = fake_shards.default_dir("webdataset_colours_array_record")
    with builders.file_lock(root / ".lock"):
      for split, pattern in (("train", train), ("val", val)):
        convert.convert(*convert.webdataset_units(pattern, True), str(root / split), progress=False)
    c.data.array_record_dir, c.data.array_record_val_dir = str(root / "train"), str(root / "val")
