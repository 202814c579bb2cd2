"""CoCa (Yu et al. 2022) on the embedded shapes data: contrastive + captioning sharing the image tower, the causal
text tower as the decoder's unimodal part (its EOT token the contrastive text embedding), cross-attending
multimodal layers for the captions. objective "clip+caption" on model "multitask_clip" (mmjax.models.multitask).

  python -m mmjax.main --config experiments/coca_shapes.py --workdir runs/coca_shapes
  python -m mmjax.main --config experiments/coca_shapes.py:runlocal --workdir /tmp/x     (seconds; for tests)

Logs train/clip/loss, train/caption/loss and the weighted total train/loss; evaluates zero-shot and retrieval, and
captions the test images (greedy; BLEU, CIDEr-D, the shapes attribute scores; captions.png in the workdir).
"""
import os

from mmjax import config as config_lib


def get_config(arg: str | None = None):
  c = config_lib.load_experiment(os.path.join(os.path.dirname(__file__), "clip_shapes.py"), arg)
  c.objective = "clip+caption"
  c.objective_weights = {"clip": 1.0, "caption": 2.0}     # CoCa's caption weight 2 (Yu et al. 2022)
  c.model.name = "multitask_clip"
  heads = 2 if config_lib.parse_arg(arg).runlocal else 4
  c.model.heads = {"caption": {"depth": 1, "num_heads": heads}}
  c.evals.names = "clip,captioning"                          # + greedy captions, BLEU and CIDEr-D
  return c
