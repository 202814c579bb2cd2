"""The demo (`make demo`): CLIP (Radford et al. 2021) on the embedded shapes data, set up to learn shape.

  python -m mmjax.main --config experiments/demo.py --workdir runs/demo
  python -m mmjax.main --config experiments/demo.py:runlocal --workdir /tmp/x     (seconds; for tests)

experiments/clip_shapes.py (the base of the other shapes configs) learns colour in a few hundred steps but shape
barely (zero-shot shape ~24 %, chance 16.7 %). Why, measured on 1,000 held-out images (trial runs of this file, 2026-12-02):
- Captions: it trains on the full captions ("a small red circle at the top left"), so size and position, easy to
  read off the patch grid, carry most of the contrastive signal, and the zero-shot prompts ("a red circle") are
  sentences it never saw. Captions naming colour and shape only (data.caption_fields) match the prompts.
- Patch embedding: an object is 10-20 px across, a few 8 px patches at a random offset; a linear 8x8 patch
  embedding learns corners and curvature slowly. A 3-layer conv stem (Xiao et al. 2021) does so in a few hundred
  steps: with the captions above, shape 33 % (patchify) -> 62 % (stem) at 1,000 steps of 64.
- Steps: at the same wall time, batches of 64 give more updates (1 object per image, 48 colour-shape classes: a
  batch of 128 repeats each class ~2.7 times, which the contrastive loss counts as negatives). Shape is learnt
  late and fast: at 1,200 steps 70.8-78.2 %, at 1,500 steps 87.6 / 77.5 % (seeds 0 / 1), at 1,800 steps (this
  file) shape 99.3 / 95.4 / 85.2 %, colour 100 / 100 / 98.9 %, shape+colour 99.1 / 97.4 / 97.2 % (seeds 0 / 1 / 2),
  in 261-277 s of wall time with compilation and evaluation on 2 cores of an Intel Xeon (2026-12-03).
The last block is computed for the CLS token only (the same gradients, less work) and the context is 12 tokens (the
longest caption), which pays for the stem. Retrieval is off: with captions naming colour and shape only, ~21 of the
1,000 test captions are the same sentence, so caption-level recall says nothing here (clip_shapes.py measures it).
Written to the workdir: zero_shot.png (test images, top-1 labels).
"""
import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_shapes.py"), arg)
  c.data.caption_fields = "colour,shape"
  c.data.context_length = c.model.text.context_length = 12
  c.model.vision.last_block_pooled_only = True
  c.evals.clip.retrieval = False
  if config_lib.parse_arg(arg).runlocal:
    c.model.vision.stem_channels = (8, 8, 16)    # 2^3 = patch_size 8
    return c
  c.model.vision.stem_channels = (16, 32, 64)
  c.batch_size = 64
  c.total_steps = 1800
  c.checkpoint_every = 900
  c.log_every = 50
  return c
