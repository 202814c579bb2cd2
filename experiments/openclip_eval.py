"""Evaluate an OpenCLIP checkpoint with mmjax (issue 22): zero-shot CIFAR-10 (CLIP's 18 templates) and Flickr8k
image<->text retrieval, with open_clip's tokenizer (tokenizer.kind = "clip_bpe") and its preprocessing (images
resized to the model's size, bicubic; the model maps them to OpenAI's mean/std: model.input_norm = "openai").

  python -m mmjax.main --config experiments/openclip_eval.py --workdir runs/oc_b32 \
      --config.model.init_from=ViT-B-32.safetensors --mode eval
  python -m mmjax.main --config experiments/openclip_eval.py:preset=ViT-B-16 ... --config.model.init_from=b16.pt

The architecture is open_clip's model config `preset` (mmjax.interop.open_clip.PRESETS); a file of another one stops
with the first parameter whose shape differs. Nothing is trained in --mode eval (no checkpoint is needed: the
model.init_from weights are scored). CIFAR-10 images are square (32 px), so resizing them is open_clip's eval
transform exactly (resize shorter side + centre crop); Flickr8k's are resized as mmjax's eval data does.
"""
from mmjax import config as config_lib
from mmjax.interop.open_clip import PRESETS

INIT_FROM_OPEN_CLIP = True   # tests/test_experiments.py writes a random-weight OpenCLIP file for model.init_from
# The runlocal architecture (seconds on a CPU), with CLIP's vocabulary so that the CLIP tokenizer applies.
TINY = dict(embed_dim=32, vision=dict(image_size=48, patch_size=16, width=64, depth=1, num_heads=1, mlp_ratio=4.0),
            text=dict(vocab_size=49408, context_length=32, width=64, depth=1, num_heads=1, mlp_ratio=4.0))


def model_config(c, preset: dict) -> None:
  """The OpenCLIP architecture `preset` into c.model / c.data (text pooled at argmax(ids), as open_clip)."""
  c.model.embed_dim = preset["embed_dim"]
  c.model.vision = dict(preset["vision"], pool="cls")
  c.model.text = dict(preset["text"], eot_id=None)
  c.model.input_norm = "openai"
  c.model.logit_scale_init = 4.605170185988092
  c.data.image_size = preset["vision"]["image_size"]
  c.data.context_length = preset["text"]["context_length"]


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, preset="ViT-B-32")
  c = config_lib.base_config()
  c.objective = "clip"
  c.total_steps = 0
  c.batch_size = 64
  c.tokenizer.kind = "clip_bpe"
  c.data.name = "flickr8k"
  c.data.crop_scale = (1.0, 1.0)
  model_config(c, PRESETS[arg.preset])
  c.evals.names = "clip"
  c.evals.num_examples = 1000                  # the Flickr8k test split: 1k images, 5k captions
  c.evals.batch_size = 100
  c.evals.clip.zero_shot_data = "cifar10_test"
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 24
    model_config(c, TINY)
    c.evals.num_examples = 6
  return c
