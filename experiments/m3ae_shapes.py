"""M3AE (Geng et al. 2022) on the embedded shapes data: one encoder over visible image patches and caption tokens,
per-sample masks (75 % of patches, 75 % of the non-pad tokens), pixel + 0.5 x token reconstruction.

  python -m mmjax.main --config experiments/m3ae_shapes.py --workdir runs/m3ae_shapes
  python -m mmjax.main --config experiments/m3ae_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)

Evals: linear probe on image-only encoder features (as the MAE run, same probe), held-out image/text losses and
masked-token accuracy, and `reconstruction.png` (columns captioned with the caption and its masked tokens
predicted) in the workdir. Sizes and optimiser follow experiments/mae_shapes.py so the probes compare.
"""
import os

import ml_collections

from mmjax import config as config_lib

_MAE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mae_shapes.py")


def model_config(mae_model: ml_collections.ConfigDict, vocab_size: int, context_length: int):
  m = mae_model
  return ml_collections.ConfigDict(dict(
      name="m3ae", vision=dict(m.vision), text=dict(vocab_size=vocab_size, context_length=context_length),
      encoder=dict(m.encoder), decoder=dict(m.decoder), image_mask_ratio=m.mask_ratio, text_mask_ratio=0.75,
      norm_pix_loss=m.norm_pix_loss, text_loss_weight=0.5, probe_pool=m.probe_pool))


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(_MAE, arg)     # same data, sizes, optimiser, evals (runlocal included)
  c.objective = "m3ae"
  c.model = model_config(c.model, c.data.vocab_size, c.data.context_length)
  return c
