"""mmjax.models.inputs: one (args, kwargs) from a batch for init, objectives and evaluators."""
from __future__ import annotations

import numpy as np
import pytest

from mmjax.errors import MmjaxError
from mmjax.models.inputs import model_inputs


class Fusion:
  modalities = ("text", "audio")


class Plain:
  pass


def test_modalities_in_order_with_their_lengths_only():
  batch = {"audio": np.ones((2, 5, 3)), "text": np.zeros((2, 4, 7)), "audio_length": np.array([5, 2]),
           "label": np.array([0, 1]), "image_length": np.array([1, 1])}
  args, kwargs = model_inputs(Fusion(), batch, ("image",))
  assert [a.shape for a in args] == [(2, 4, 7), (2, 5, 3)]          # the model's order, not the batch's
  assert list(kwargs) == ["lengths"] and list(kwargs["lengths"]) == ["audio"]
  np.testing.assert_array_equal(kwargs["lengths"]["audio"], [5, 2])


def test_fallback_keys_without_modalities_and_no_lengths():
  batch = {"image": np.zeros((2, 8, 8, 3)), "tokens": np.zeros((2, 6), np.int32)}
  args, kwargs = model_inputs(Plain(), batch, ("image", "tokens"))
  assert [a.shape for a in args] == [(2, 8, 8, 3), (2, 6)] and kwargs == {}


def test_missing_key_names_who_needs_it_and_what_the_batch_has():
  with pytest.raises(MmjaxError, match=r"objective 'classify' needs batch keys \['audio'\].*\['label', 'text'\]"):
    model_inputs(Fusion(), {"text": np.zeros(2), "label": np.zeros(2)}, what="objective 'classify'")
  with pytest.raises(MmjaxError, match=r"needs batch keys \['label'\]"):         # a key the caller reads itself
    model_inputs(Fusion(), {"text": np.zeros(2), "audio": np.zeros(2)}, also=("label",))


def test_a_tokenizer_larger_than_the_model_vocabulary_stops_at_start_up(tmp_path):
  """An id past the embedding table is no error inside jit (flax's Embed returns NaN for it): the Trainer refuses
  the run instead, naming both sizes and the key to set, before anything compiles."""
  import os
  from mmjax import config as config_lib
  from mmjax.train import loop
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = config_lib.load_experiment(os.path.join(root, "experiments", "clip_shapes.py"), "runlocal")
  config.data.vocab_size, config.model.text.vocab_size = 2048, 64
  with pytest.raises(MmjaxError, match=r"the tokenizer has \d+ tokens .* model\.text\.vocab_size=64: .*"
                                       r"--config\.model\.text\.vocab_size=\d+"):
    loop.Trainer(config, str(tmp_path))
