"""Composite objectives on Flickr8k (Hodosh et al. 2013), one config per row of experiments/tables/composite.md's
"flickr8k" section: the towers, data and optimiser of experiments/clip_flickr8k.py, and the objective of

  clip      CLIP (Radford et al. 2021), clip_flickr8k.py itself
  coca      CoCa (Yu et al. 2022): "clip+caption", caption weight 2, a 1-layer cross-attention caption head
  slip      SLIP (Mu et al. 2022): "clip+simclr" on two augmented views, SimCLR MLP head 512 -> 128
  flip      FLIP (Li et al. 2023): CLIP with patch dropout 0.5 in training
  clip_mae  CLIP + MAE (He et al. 2022) beside it: "clip+mae", mask ratio 0.75, a 1-layer decoder

  python -m mmjax.main --config experiments/composite_flickr8k.py:coca --workdir runs/coca_flickr8k
  .venv/bin/python experiments/reports/composite.py --data flickr8k        (the whole section)

Evaluated by image<->text retrieval R@1/5/10 on the 1k test images (5k captions), zero-shot CIFAR-10 and, for
CoCa, greedy captions scored by CIDEr-D against the image's 5 references.
"""
import os

from mmjax import config as config_lib

METHODS = ("clip", "coca", "slip", "flip", "clip_mae")


def get_config(arg: str | None = None):
  method, rest = config_lib.split_method_arg(arg, METHODS, "coca")
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_flickr8k.py"), rest)
  small = config_lib.parse_arg(rest).runlocal
  heads = 2 if small else 3                                  # the towers' head count (width 32 / 192)
  if method == "coca":
    c.objective, c.objective_weights = "clip+caption", {"clip": 1.0, "caption": 2.0}
    c.model.name = "multitask_clip"
    c.model.heads = {"caption": {"depth": 1, "num_heads": heads}}
    c.evals.names = "clip,captioning"
  elif method == "slip":
    c.objective, c.objective_weights = "clip+simclr", {"clip": 1.0, "simclr": 1.0}
    c.model.name = "multitask_clip"
    c.model.heads = {"simclr": {"hidden": 32 if small else 512, "dim": 16 if small else 128}}
  elif method == "flip":
    c.model.vision.patch_dropout = 0.5
  elif method == "clip_mae":
    c.objective, c.objective_weights = "clip+mae", {"clip": 1.0, "mae": 1.0}
    c.model.name = "multitask_clip"
    c.model.heads = {"mae": {"width": 32 if small else 96, "depth": 1, "num_heads": heads, "mask_ratio": 0.75}}
  return c
