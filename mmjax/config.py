"""The base config: every key a run may set, with its default. Experiments start from `base_config()`.

Keeping one schema means a misspelled key in an experiment file or on the command line is an error, not a silent no-op.
"""
from __future__ import annotations

import copy
import difflib

import ml_collections

from mmjax.errors import MmjaxError


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.objective = "clip"             # mmjax.registry.OBJECTIVES; "a+b": weighted composite (mmjax.objectives.composite)
  c.objective_weights = None       # {term: weight} of a composite objective, e.g. {"clip": 1.0, "caption": 2.0}
  c.objective_kwargs = None        # the objective's settings, e.g. {"temperature": 2.0} ({term: {...}} for a+b)
  c.total_steps = 1000
  c.batch_size = 256               # global batch (all devices, all processes)
  c.grad_accum_steps = 1           # micro-batches per step; exact for contrastive losses (feature caching)
  c.log_every = 50
  c.eval_every = 0                 # 0: evaluate only at the end
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  # Best-checkpoint selection (mmjax/train/best.py): after each evaluation, the step where this evaluation result
  # (e.g. "classify/accuracy"; "" = off) is best (select_best_mode "max" or "min") is checkpointed and kept beyond
  # keep_checkpoints, recorded in workdir/best.json; `--mode eval --best` scores it.
  c.select_best = ""
  c.select_best_mode = "max"
  c.progress_bar = True
  # With several processes, whether any got a stop signal is agreed (one blocking all-gather) every this many steps.
  c.preemption_check_every = 10

  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})   # -1: all remaining devices
  # Parameter sharding: list of (regex on the "/"-joined param path, PartitionSpec tuple); first match wins,
  # unmatched parameters are replicated.
  # A spec may be the string "fsdp": the leaf's largest dimension divisible by mesh.fsdp is split over it;
  # rules match the whole train state, so (".*", "fsdp") shards parameters and optimizer moments (ZeRO-3).
  c.sharding_rules = ()
  c.print_sharding = True          # print the placement table (parameter, shape, spec, bytes per device) at start

  c.optim = ml_collections.ConfigDict(dict(
      name="adamw", lr=1e-3, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1,
      warmup_steps=100, schedule="cosine", end_lr_factor=0.0, clip_grad_norm=1.0,
      # Parameters whose path matches this regex get no weight decay (biases, norms, temperature, embeddings of position).
      no_decay_regex=r"(bias|scale|logit_scale|logit_bias|pos_embedding|cls)$",
      # (regex, lo, hi): parameters kept in [lo, hi] after each update (mmjax.train.optim.clamp_params). As
      # OpenCLIP: logit_scale in [0, log 100]; the losses use exp(logit_scale) unclamped.
      clamp=((r"(^|/)logit_scale$", 0.0, 4.605170185988092),),
      # Regex (re.search on "/"-joined parameter paths, e.g. "^vision/" = LiT's locked image tower): parameters that
      # get no update and no optimizer state (mmjax.train.optim.freeze). "" trains everything.
      frozen=""))

  # The run's tokenizer (mmjax.data.pipeline.tokenizer_for): "bpe_trained" (a BPE trained on the data's captions,
  # data.vocab_size), "clip_bpe" (OpenCLIP's; bpe_path "" = $MMJAX_CLIP_BPE or the installed open_clip_torch's)
  # or "hf" (a local tokenizer.json at `path`; pad_id / eos_id / bos_id -1 = from the file).
  c.tokenizer = ml_collections.ConfigDict(dict(kind="bpe_trained", bpe_path="", path="", pad_id=-1, eos_id=-1,
                                               bos_id=-1))

  # The data set's keys: these, read by the pipeline for every data set, then the default data set's own (shapes:
  # mmjax.data.shapes.CONFIG_KEYS); another data set's keys are declared where it is registered
  # (DatasetEntry.config_keys) and accepted when data.name selects it (mmjax.train.loop.config_schema).
  c.data = ml_collections.ConfigDict(dict(
      name="shapes", image_size=64,
      context_length=32, vocab_size=512, num_workers=0, prefetch=2,
      # Prepared (TFDS) data sets: raw files from manual_dir (default ../shared/data/<name> or $MMJAX_RAW_DATA),
      # built into data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets); fake_raw=n builds from n generated
      # fake raw examples instead (tests).
      # Bad input (mmjax/data/bad_input.py): skip_bad None = the data set decides: your own data (webdataset, csv,
      # image_folder, array_record) skip and count bad examples (train/data_bad), the TFDS builders' prepare stops
      # at the first (True/False force either); more than max_bad_fraction of the examples read bad stops a run.
      manual_dir="", data_dir="", skip_bad=ml_collections.config_dict.placeholder(bool), max_bad_fraction=0.01,
      fake_raw=0,
      crop_scale=(0.9, 1.0), flip=False))      # training augmentation of real images
  from mmjax.data.shapes import CONFIG_KEYS as shapes_keys   # noqa: PLC0415
  c.data.update(shapes_keys)

  # The model: its name, the loading keys every model has, then the default model's own keys (CLIP's:
  # mmjax.models.clip.CONFIG_KEYS); another model's keys are its registered dataclass's fields.
  from mmjax.models.clip import CONFIG_KEYS as clip_keys   # noqa: PLC0415  (imports jax; configs need not)
  c.model = ml_collections.ConfigDict(dict(
      name="clip", **copy.deepcopy(clip_keys),
      # Start from a checkpoint (mmjax.train.init_from; ignored when the workdir has one to resume): an OpenCLIP
      # file (.safetensors / .pt), "PRESET:FILE" (e.g. "ViT-B-32:b32.safetensors") or an mmjax workdir; only the
      # parameters whose path matches init_from_keys (a regex; "" = all shared) are loaded, the rest stay fresh.
      init_from="", init_from_keys=""))

  c.evals = ml_collections.ConfigDict(dict(
      names="clip",                 # comma-separated evaluators (mmjax.registry.EVALUATORS); "" for none
      num_examples=1000, batch_size=250))   # the test examples an evaluator reads, and its batch size
  # Each evaluator's own settings, under its name (evals.<evaluator>.<key>, e.g. evals.clip.zero_shot_data): the
  # keys and defaults its module declares where it is registered (mmjax.evals.base.EVAL_KEYS).
  from mmjax.evals.runner import evaluator_keys   # noqa: PLC0415  (the evaluators import jax; configs need not)
  for name, keys in evaluator_keys().items():
    c.evals[name] = ml_collections.ConfigDict(keys)
  return c


def check_keys(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict | None = None,
               prefix: str = "") -> None:
  """Raises MmjaxError naming the first key of `config` that the base schema does not know.

  Sub-dicts whose schema value is a plain dict of model kwargs (model.vision, model.text) are checked too;
  keys under `model` beyond the base ones are allowed only if the experiment's model declares them (checked
  again when the model is built).
  """
  schema = base_config() if schema is None else schema
  for key in config.keys():
    path = f"{prefix}{key}"
    if key not in schema:
      if prefix.startswith("model."):
        continue  # model kwargs are validated by the model constructor
      if prefix == "model.":
        continue
      close = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f"; did you mean {prefix}{close[0]!r}?" if close else ""
      raise MmjaxError(f"unknown config key {path!r}{hint} (valid keys under {prefix or 'the top level'}: "
                       f"{', '.join(sorted(schema.keys()))})")
    value, ref = config[key], schema[key]
    if isinstance(value, ml_collections.ConfigDict) and isinstance(ref, ml_collections.ConfigDict):
      check_keys(value, ref, prefix=f"{path}.")


def parse_arg(arg: str | None, **defaults):
  """big_vision-style config argument: "runlocal,steps=10" -> ConfigDict(runlocal=True, steps=10, ...)."""
  out = ml_collections.ConfigDict(dict(defaults, runlocal=False))
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition("=")
    if key not in out:
      raise MmjaxError(f"unknown config argument {key!r}; valid: {', '.join(sorted(out.keys()))}")
    out[key] = type(out[key])(value) if value else True
  return out


def split_method_arg(arg: str | None, methods, default: str) -> tuple[str, str]:
  """"lmf,runlocal" -> ("lmf", "runlocal"): an optional leading method name (one of `methods`, else `default`),
  then the usual config arguments for `parse_arg` (configs with one variant per table row)."""
  items = [a.strip() for a in (arg or "").split(",") if a.strip()]
  method = items.pop(0) if items and items[0] in methods else default
  return method, ",".join(items)


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to seconds on a CPU (tests run every experiment like this for a step or two)."""
  c.total_steps, c.batch_size, c.log_every, c.checkpoint_every = 2, 8, 1, 2
  c.grad_accum_steps = 1
  c.optim.warmup_steps = 1
  c.progress_bar = False
  c.evals.num_examples, c.evals.batch_size = 16, 8
  return c


def load_experiment(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of an experiment file by path (configs may build on a sibling: `load_experiment(
  os.path.join(os.path.dirname(__file__), "clip_shapes.py"), arg)`), wherever the process was started."""
  import os
  if not os.path.exists(path):
    raise MmjaxError(f"config file {path!r} does not exist")
  return load_experiment_module(path).get_config(arg)


def load_experiment_module(path: str):
  """The experiment file at `path` as a module (its tables of methods, model configs, ...)."""
  import importlib.util
  import os
  spec = importlib.util.spec_from_file_location(f"mmjax_experiment_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
