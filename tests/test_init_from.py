"""model.init_from / model.init_from_keys / optim.frozen (issue 22 item 5): a run starts from an OpenCLIP file, a
preset plus file or an mmjax workdir; frozen parameters stay bitwise unchanged and have no optimizer state;
resuming wins over init_from; bad paths and shape mismatches are one-line errors."""
from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from mmjax import config as config_lib
from mmjax.errors import MmjaxError
from mmjax.interop import open_clip as oc
from mmjax.train import init_from as init_from_lib
from mmjax.train.loop import Trainer
from mmjax.train.optim import path_str

sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
from open_clip_files import write_open_clip  # noqa: E402

STEPS = 5
# One 5-step training run (a compile of the step) shared by the module: ~15 s of CPU, more on a loaded machine.
pytestmark = pytest.mark.slow


def _config(**over):
  c = config_lib.load_experiment(os.path.join(ROOT, "experiments", "clip_shapes.py"), "runlocal")
  c.total_steps, c.checkpoint_every, c.evals.names, c.print_sharding = STEPS, 100, "", False
  c.optim.warmup_steps, c.optim.lr = 0, 1e-2
  for k, v in over.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def _flat(tree) -> dict[str, np.ndarray]:
  return {path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def lit(tmp_path_factory):
  """A LiT-style run: everything loaded from a random OpenCLIP file, the image tower frozen, 5 steps."""
  d = tmp_path_factory.mktemp("init_from")
  sd = write_open_clip(str(d / "oc.safetensors"), _config().model, seed=1)
  config = _config(**{"model.init_from": str(d / "oc.safetensors"), "optim.frozen": "^vision/"})
  trainer = Trainer(config, str(d / "run"))
  before = _flat(trainer.state.params)
  opt_state = trainer.state.opt_state
  trainer.train()
  return dict(dir=d, sd=sd, before=before, after=_flat(trainer.state.params), opt_state=opt_state, config=config)


def test_loaded_values_are_the_files(lit):
  file_params = _flat(oc.import_params(lit["sd"]))           # OpenCLIP names -> paths, independently of the loop
  assert sorted(file_params) == sorted(lit["before"])
  for k, v in file_params.items():
    np.testing.assert_array_equal(lit["before"][k], v, err_msg=k)


def test_frozen_bitwise_unchanged_others_change(lit):
  vision = [k for k in lit["before"] if k.startswith("vision/")]
  others = [k for k in lit["before"] if not k.startswith("vision/")]
  assert vision and others
  for k in vision:
    assert lit["before"][k].tobytes() == lit["after"][k].tobytes(), k
  changed = [k for k in others if not np.array_equal(lit["before"][k], lit["after"][k])]
  assert len(changed) == len(others), sorted(set(others) - set(changed))


def test_frozen_parameters_have_no_optimizer_state(lit):
  sizes = {k: v.size for k, v in lit["before"].items()}
  trainable = sum(n for k, n in sizes.items() if not k.startswith("vision/"))
  leaves = jax.tree.leaves(lit["opt_state"])
  floats = sum(x.size for x in leaves if np.issubdtype(x.dtype, np.floating))
  assert floats == 2 * trainable                             # AdamW's mu and nu of the text tower + logit_scale only
  assert all(x.size == 1 and np.issubdtype(x.dtype, np.integer) for x in leaves
             if not np.issubdtype(x.dtype, np.floating))     # and step counts


def test_resume_wins_over_init_from(lit, tmp_path):
  other = write_open_clip(str(tmp_path / "other.safetensors"), lit["config"].model, seed=7)
  config = _config(**{"model.init_from": str(tmp_path / "other.safetensors"), "optim.frozen": "^vision/"})
  trainer = Trainer(config, str(lit["dir"] / "run"))
  assert trainer.start_step == STEPS
  got = _flat(trainer.state.params)
  for k, v in lit["after"].items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  assert not np.array_equal(got["text/proj/kernel"], other["text_projection"])


def test_init_from_a_workdir_and_keys_leave_the_rest_fresh(lit, tmp_path, capsys):
  config = _config(**{"model.init_from": str(lit["dir"] / "run"), "model.init_from_keys": "^text/"})
  got = _flat(Trainer(config, str(tmp_path / "w")).state.params)
  fresh = _flat(Trainer(_config(), str(tmp_path / "fresh")).state.params)
  table = capsys.readouterr().out
  for k in got:
    want = lit["after"][k] if k.startswith("text/") else fresh[k]
    np.testing.assert_array_equal(got[k], want, err_msg=k)
  assert "text/proj/kernel" in table and "loaded" in table and "vision/conv1/kernel" in table
  assert f"(step {STEPS})" in table


def _one_line(excinfo) -> str:
  msg = str(excinfo.value)
  assert "\n" not in msg
  return msg


def test_errors_are_one_line(lit, tmp_path):
  params = {"vision": {"conv1": {"kernel": np.zeros((8, 8, 3, 16), np.float32)}}}
  with pytest.raises(MmjaxError) as e:
    init_from_lib.load_into(params, str(tmp_path / "missing.safetensors"))
  assert "no such file" in _one_line(e)
  with pytest.raises(MmjaxError) as e:
    init_from_lib.load_into(params, str(lit["dir"] / "oc.safetensors"))
  msg = _one_line(e)
  assert "vision/conv1/kernel" in msg and "(8, 8, 3, 32)" in msg and "(8, 8, 3, 16)" in msg
  (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(MmjaxError) as e:
    init_from_lib.load_into(params, str(tmp_path / "junk.safetensors"))
  assert "cannot read" in _one_line(e)
  with pytest.raises(MmjaxError) as e:
    init_from_lib.load_into(params, f"ViT-B-32:{lit['dir'] / 'oc.safetensors'}")
  assert "is not a ViT-B-32 checkpoint" in _one_line(e)
  with pytest.raises(MmjaxError) as e:
    init_from_lib.load_into(params, str(lit["dir"] / "oc.safetensors"), "^nothing/")
  assert "selects no parameter" in _one_line(e)
  with pytest.raises(MmjaxError) as e:
    Trainer(_config(**{"optim.frozen": "^visoin/"}), str(tmp_path / "f"))
  assert "optim.frozen" in _one_line(e)


def test_checkpointed_tokenizers_round_trip(tmp_path):
  """The loop stores `tok.to_json()` in each checkpoint and resumes with pipeline.tokenizer_from_json."""
  from mmjax.data.hf_tokenizer import HfTokenizer
  from mmjax.data.pipeline import tokenizer_from_json
  import tokenizers
  texts = ['a sign that says "open!".', "two dogs on grass"]
  hf = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<pad>": 0, "</s>": 1, "a": 2, "[UNK]": 3},
                                                        unk_token="[UNK]"))
  hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  hf.save(str(tmp_path / "tokenizer.json"))
  toks = [HfTokenizer(str(tmp_path / "tokenizer.json"))]
  try:
    from mmjax.data.clip_bpe import ClipBpeTokenizer
    toks.append(ClipBpeTokenizer(context_length=20))
  except MmjaxError:
    pass                        # no CLIP BPE vocabulary installed: the HF tokenizer is still checked
  for tok in toks:
    back = tokenizer_from_json(tok.to_json())
    assert type(back) is type(tok)
    np.testing.assert_array_equal(back.encode(texts, 20), tok.encode(texts, 20))
  os.remove(tmp_path / "tokenizer.json")            # the HF spec is self-contained
  np.testing.assert_array_equal(tokenizer_from_json(toks[0].to_json()).encode(texts, 8), toks[0].encode(texts, 8))
