"""CMU-MOSI binary sentiment with a fusion classifier over utterance-level text / audio / video features.

  python -m mmjax.main --config experiments/mosi_fusion.py:lmf --workdir runs/mosi_lmf
  python -m mmjax.main --config experiments/mosi_fusion.py:tfn,runlocal --workdir /tmp/x   (seconds; fake data)

The argument names the method, a key of METHODS (text, audio, video, early, late, tfn, lmf, gated, mult; default
lmf), optionally followed by `runlocal` (tiny, on generated fake MOSI files: no ../shared/data needed).
Measures test-split (752 utterances, 31 unseen videos) binary accuracy and F1 (evaluator "classification": f1 is
the F1 of the positive class, plus macro / weighted F1) of the model after a fixed budget of 20 epochs
(900 steps of 32; AdamW 1e-3, cosine, dropout 0.2), the protocol of experiments/reports/mosi.py (which trains the
same models, 5 seeds each, with the loop's step function; LMF: 76.4 ± 0.4 % there). About a minute on 2 CPU
cores. Set --config.evals.classification.robustness_modality=text for MultiBench's robustness curve of one modality.
"""
from mmjax import config as config_lib

MODALITIES = ("text", "audio", "video")


def mlp(features: int = 32) -> dict:
  return {"name": "mlp", "hidden": (64,), "features": features, "dropout": 0.2}


# method -> FusionClassifier fields (num_classes=2, dropout=0.2 are added). The same models as the table of
# experiments/reports/mosi.py (its METHODS, keyed there by display name).
METHODS = {
    "text": dict(modalities=("text",), fusion="early", encoders={"text": mlp()}, head_hidden=(32,)),
    "audio": dict(modalities=("audio",), fusion="early", encoders={"audio": mlp()}, head_hidden=(32,)),
    "video": dict(modalities=("video",), fusion="early", encoders={"video": mlp()}, head_hidden=(32,)),
    "early": dict(modalities=MODALITIES, fusion="early", head_hidden=(64, 32)),
    "late": dict(modalities=MODALITIES, fusion="late", fusion_kwargs={"mode": "concat"},
                 encoders={m: mlp() for m in MODALITIES}, head_hidden=(32,)),
    "tfn": dict(modalities=MODALITIES, fusion="tfn", fusion_kwargs={"features": 32},
                encoders={m: mlp(8) for m in MODALITIES}, head_hidden=(32,)),
    "lmf": dict(modalities=MODALITIES, fusion="lmf", fusion_kwargs={"features": 32, "rank": 4},
                encoders={m: mlp() for m in MODALITIES}, head_hidden=(32,)),
    "gated": dict(modalities=MODALITIES, fusion="gmu", fusion_kwargs={"features": 32},
                  encoders={m: mlp() for m in MODALITIES}, head_hidden=(32,)),
    "mult": dict(modalities=MODALITIES, fusion="mult",
                 fusion_kwargs={"width": 32, "num_heads": 4, "depth": 1, "self_depth": 1, "tokens_per_vector": 4,
                                "pool": "mean", "dropout": 0.1},
                 head_hidden=(32,)),
}
TRAIN_SIZE, BATCH_SIZE, EPOCHS = 1447, 32, 20


def model_config(method: str) -> dict:
  return dict(name="fusion_classifier", num_classes=2, dropout=0.2, **METHODS[method])


def get_config(arg: str | None = None):
  method, rest = config_lib.split_method_arg(arg, METHODS, "lmf")
  arg = config_lib.parse_arg(rest)
  c = config_lib.base_config()
  c.objective = "classify"
  c.batch_size = BATCH_SIZE
  c.total_steps = EPOCHS * (TRAIN_SIZE // BATCH_SIZE)        # 900: 20 epochs of whole batches
  c.log_every = TRAIN_SIZE // BATCH_SIZE
  c.checkpoint_every = c.total_steps // 2
  c.optim.update(dict(name="adamw", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, warmup_steps=20,
                      schedule="cosine", end_lr_factor=0.0, clip_grad_norm=1.0,
                      no_decay_regex=r"(bias|scale|weights|rank_weights)$"))
  c.data.name = "mosi"
  c.model = model_config(method)
  c.evals.names = "classification"
  c.evals.num_examples = 0             # the whole split
  c.evals.batch_size = 256
  c.evals.classification.split = "test"
  c.evals.classification.robustness_modality = ""
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 48                # 12 fake videos: 24 train / 24 test utterances
  return c
