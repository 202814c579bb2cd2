"""AV-MNIST digit classification (MNIST image + FSDD spoken digit) with a fusion classifier over CNN encoders.

  python -m mmjax.main --config experiments/avmnist_fusion.py:lmf --workdir runs/avmnist_lmf
  python -m mmjax.main --config experiments/avmnist_fusion.py:mbt,runlocal --workdir /tmp/x   (seconds; fake data)

The argument names the method, a key of METHODS (image, audio: unimodal CNNs; early: raw pixels and spectrogram
bins flattened and concatenated into one MLP; late: the two CNN features, weighted concatenation; tfn; lmf;
gated (GMU); mbt: attention bottlenecks over the CNNs' last feature maps as tokens), default lmf, optionally
followed by `runlocal` (tiny, on generated fake AV-MNIST files: no ../shared/data needed).
Data (mmjax/data/fusion_data.py, builders/avmnist.py): train 18000 / dev 2000 / test 10000; images low-passed to
the fewest PCA components holding 25 % of the train images' variance (`data.image_pca_energy`, CentralNet's "75 %
of the energy removed"; 0: clean images), audio clean unless `--config.data.audio_snr_db=DB` (white noise at that
SNR, fixed per example), log-mel spectrograms [51, 40, 1] of the first second (hop 20 ms, 40 mels), standardised.
Measures test accuracy and macro F1 (evaluator "classification"; `--config.evals.classification.split=dev` for the
dev split) of the final model after 4 epochs (1124 steps of 64; AdamW 1e-3, cosine, dropout 0.1), the budget and
models of experiments/reports/avmnist.py (which keeps the best-dev epoch instead of the last and calibrates the SNR
on dev).
Preparing the data set once takes minutes; each run preprocesses its splits in memory first (about a minute).
"""
from ml_collections import config_dict

from mmjax import config as config_lib


MODALITIES = ("image", "audio")


def cnn(**kw) -> dict:
  """LeNet-like: 3x3 convs with 8 / 16 / 32 channels, each followed by 2x2 max-pooling, global average pooling."""
  return {"name": "cnn", "channels": (8, 16, 32), **kw}


# method -> FusionClassifier fields (num_classes=10, dropout=0.1 are added). The models of the table of
# experiments/reports/avmnist.py (its METHODS, keyed there by display name), except that early fusion flattens the
# raw inputs with "flatten" encoders here instead of reading pre-flattened arrays.
METHODS = {
    "image": dict(modalities=("image",), fusion="early", encoders={"image": cnn()}, head_hidden=(64,)),
    "audio": dict(modalities=("audio",), fusion="early", encoders={"audio": cnn()}, head_hidden=(64,)),
    "early": dict(modalities=MODALITIES, fusion="early", encoders={m: {"name": "flatten"} for m in MODALITIES},
                  head_hidden=(128, 64)),
    "late": dict(modalities=MODALITIES, fusion="late", fusion_kwargs={"mode": "concat"},
                 encoders={m: cnn() for m in MODALITIES}, head_hidden=(64,)),
    "tfn": dict(modalities=MODALITIES, fusion="tfn", fusion_kwargs={"features": 64},
                encoders={m: cnn(features=16) for m in MODALITIES}, head_hidden=(64,)),
    "lmf": dict(modalities=MODALITIES, fusion="lmf", fusion_kwargs={"features": 64, "rank": 4},
                encoders={m: cnn() for m in MODALITIES}, head_hidden=(64,)),
    "gated": dict(modalities=MODALITIES, fusion="gmu", fusion_kwargs={"features": 64},
                  encoders={m: cnn() for m in MODALITIES}, head_hidden=(64,)),
    "mbt": dict(modalities=MODALITIES, fusion="mbt",
                fusion_kwargs={"width": 64, "num_heads": 4, "depth": 2, "fusion_layer": 1, "num_bottlenecks": 4,
                               "mlp_ratio": 2.0},
                encoders={m: cnn(tokens=True) for m in MODALITIES}, head_hidden=(64,)),
}
TRAIN_SIZE, BATCH_SIZE, EPOCHS = 18000, 64, 4


def model_config(method: str, tiny: bool = False) -> dict:
  cfg = dict(name="fusion_classifier", num_classes=10, dropout=0.1, **METHODS[method])
  if tiny:      # runlocal: one 4-channel conv stage, small head and fusion
    cfg["encoders"] = {m: (dict(e, channels=(4,)) if e["name"] == "cnn" else e) for m, e in cfg["encoders"].items()}
    cfg["head_hidden"] = (8,)
    if method in ("tfn", "lmf", "gated"):
      cfg["fusion_kwargs"] = dict(cfg["fusion_kwargs"], features=8)
    if method == "mbt":
      cfg["fusion_kwargs"] = dict(cfg["fusion_kwargs"], width=8, num_heads=2)
  return cfg


def get_config(arg: str | None = None):
  method, rest = config_lib.split_method_arg(arg, METHODS, "lmf")
  arg = config_lib.parse_arg(rest)
  c = config_lib.base_config()
  c.objective = "classify"
  c.batch_size = BATCH_SIZE
  c.total_steps = EPOCHS * (TRAIN_SIZE // BATCH_SIZE)       # 1124: 4 epochs of whole batches
  c.log_every = 50
  c.checkpoint_every = TRAIN_SIZE // BATCH_SIZE
  c.optim.update(dict(name="adamw", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, warmup_steps=50,
                      schedule="cosine", end_lr_factor=0.0, clip_grad_norm=1.0,
                      no_decay_regex=r"(bias|scale|weights|rank_weights)$"))
  c.data.name = "avmnist"
  c.data.image_pca_energy = 0.25
  c.data.image_noise_std = 0.0
  c.data.audio_snr_db = config_dict.placeholder(float)     # None: clean audio
  c.data.audio_num_samples = 8000
  c.data.audio_hop_length = 160
  c.data.audio_n_mels = 40
  c.data.audio_standardize = True
  c.data.noise_seed = 0
  c.model = model_config(method)
  c.evals.names = "classification"
  c.evals.num_examples = 0             # the whole split
  c.evals.batch_size = 500
  c.evals.classification.split = "test"
  c.evals.classification.robustness_modality = ""
  if arg.runlocal:
    config_lib.runlocal(c)
    c.data.fake_raw = 40                # 36 train / 4 dev / 40 test fake pairs
    c.data.audio_num_samples = 2000     # [13, 40, 1] spectrograms
    c.model = model_config(method, tiny=True)
  return c
