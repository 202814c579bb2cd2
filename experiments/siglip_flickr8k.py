"""SigLIP (Zhai et al. 2023) on Flickr8k: sigmoid loss, t' init log 10, bias init -10.

  python -m mmjax.main --config experiments/siglip_flickr8k.py --workdir runs/siglip_flickr8k
"""
import math
import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_flickr8k.py"), arg)
  c.objective = "siglip"
  c.model.logit_scale_init = math.log(10.0)
  c.model.logit_bias_init = -10.0
  return c
