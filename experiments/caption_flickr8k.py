"""Image captioning (ViT encoder + cross-attending Transformer decoder, mmjax.models.captioner) trained from scratch
on Flickr8k (Hodosh et al. 2013): 6,000 training images, one of their 5 captions per step (teacher forcing,
objective "caption"); scored by corpus BLEU-1..4 and CIDEr-D of beam-search captions (beam 3, GNMT alpha 0.6)
of the 1,000 test images against all 5 references each.

  python -m mmjax.main --config experiments/caption_flickr8k.py --workdir runs/caption_flickr8k
  python -m mmjax.main --config experiments/caption_flickr8k.py --workdir runs/caption_flickr8k --mode eval \
      --config.evals.captioning.caption_beam_size=1                                  # greedy instead

Sized for a CPU (64 px, 4-layer ViT, 3-layer decoder, vocabulary 4096); on a GPU raise the image size, the
widths and total_steps, or start the encoder from a CLIP run. Published Flickr8k captioners (Show-Attend-Tell,
BLEU-4 ~0.21 with a pretrained CNN) are far larger and pretrained: numbers from this config are not comparable.
"""

import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg)
  shapes = config_lib.load_experiment_module(os.path.join(os.path.dirname(__file__), "caption_shapes.py"))
  c = config_lib.base_config()
  c.objective = "caption"
  c.total_steps = 1200
  c.batch_size = 64
  c.log_every = 50
  c.checkpoint_every = 500
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.05
  c.data.name = "flickr8k"
  c.data.image_size = 64
  c.data.context_length = 32
  c.data.vocab_size = 4096
  c.data.crop_scale = (0.8, 1.0)
  c.model = shapes.model_config(image_size=64, patch_size=8, width=192, depth=4, heads=3, dec_width=192,
                                dec_depth=3, vocab_size=4096, context_length=32)
  c.evals.names = "captioning,masked"
  c.evals.num_examples = 1000                  # the whole Flickr8k test split: 1k images, 5k reference captions
  c.evals.batch_size = 100
  c.evals.captioning.caption_beam_size = 3
  c.evals.captioning.caption_alpha = 0.6
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 24                       # generated raw files in the real format: never skips
    c.data.image_size = 32
    c.data.vocab_size = 512
    c.model = shapes.model_config(image_size=32, width=32, depth=1, heads=2, dec_width=32, dec_depth=1,
                                  vocab_size=512, context_length=32)
    c.evals.num_examples = 6
  return c


