"""MCTN (Pham et al. 2019) on CMU-MOSI: text -> (audio, video) -> text cyclic translation; text alone at test time.

  python -m mmjax.main --config experiments/mctn_mosi.py --workdir runs/mctn_mosi
  python -m mmjax.main --config experiments/mctn_mosi.py:mctn,runlocal --workdir /tmp/x   (seconds; fake data)

The argument names the variant, a key of METHODS (default mctn), optionally followed by `runlocal` (tiny, on
generated fake MOSI files):
  mctn:     CE + translation MSE (text -> audio ++ video) + cyclic MSE (back to text), weights 1 and 1;
  seq2seq:  CE + translation MSE only (no cycle: the paper's ablation);
  encoder:  CE only, the same text encoder and head (control: is any gain from translation or from the model?).
Model (mmjax/models/mctn.py): each utterance vector cut into 4 tokens (text 100 -> 4 x 25; target 73 + 100 =
173 -> 4 x 44), input Dense 32, one shared GRU encoder (32) for both directions, GRU decoders (32), the classifier
an MLP (32) on the mean of the text encoder states. Only `text` is read at test time (`model.modalities`).
Protocol of experiments/mosi_fusion.py (its text-only row is the baseline): 20 epochs (900 steps of 32), AdamW
1e-3, cosine, dropout 0.2, weight decay 1e-4; the final model scored on the test split (752 utterances) by the
"classification" evaluator (binary accuracy, F1). experiments/reports/colearning_transfer.py --part mctn runs
3 seeds of each variant and of the text-only baseline.
"""
import os

from mmjax import config as config_lib

METHODS = {
    "mctn": dict(translation_weight=1.0, cycle_weight=1.0),
    "seq2seq": dict(translation_weight=1.0, cycle_weight=0.0),
    "encoder": dict(translation_weight=0.0, cycle_weight=0.0),
}
MOSI_DIMS = {"text": 100, "audio": 73, "video": 100}


def model_config(source: str = "text", targets=("audio", "video")) -> dict:
  return dict(name="mctn", num_classes=2, source=source, targets=tuple(targets),
              target_dims=tuple(MOSI_DIMS[t] for t in targets), width=32, hidden=32, tokens_per_vector=4,
              shared_encoder=True, head_hidden=(32,), dropout=0.2, pool="mean")


def get_config(arg: str | None = None):
  method, rest = config_lib.split_method_arg(arg, METHODS, "mctn")
  # The protocol (data, optimizer, budget, evaluation) of experiments/mosi_fusion.py, whose text-only row is the
  # baseline; only the model and the objective differ.
  fusion = config_lib.load_experiment_module(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                          "mosi_fusion.py"))
  c = fusion.get_config(",".join(["text"] + ([rest] if rest else [])))
  c.objective = "mctn"
  c.objective_kwargs = dict(METHODS[method])       # the loss weights λ_t, λ_c
  c.optim.no_decay_regex = r"(bias|scale)$"
  c.model = model_config()
  return c
