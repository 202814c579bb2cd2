"""MVAE: the multimodal VAE of Wu & Goodman 2018 ("Multimodal Generative Models for Scalable Weakly-Supervised
Learning", NeurIPS), for shapes scenes: an image modality and a structured-label modality.

One Gaussian encoder ("expert") per modality, q_m(z | x_m) = N(mu_m, diag exp(logvar_m)); the joint posterior of
any subset X of the modalities is their product of experts with the prior expert p(z) = N(0, I):

  q(z | X) ∝ p(z) prod_{m in X} q_m(z | x_m)   ->   T = 1 + sum_m 1 / var_m,   mu = (sum_m mu_m / var_m) / T,   var = 1 / T

(`product_of_experts`, a closed form; a missing modality is an expert with zero precision, `mask`). Decoders:
  image  [B, H, W, 3] in [-1, 1]: strided convs -> z;  z -> transposed convs -> the mean of a Gaussian with one
         log-scale per colour channel (`image_log_scale`: learned, or fixed with learn_image_scale=False; a learned
         scale can settle in a poor optimum that leaves whole colour channels unmodelled);
  labels (`attributes`, default shape, colour, size, position of the scene's first object; int [B] or [B, K], the
         first column used): concatenated one-hots -> MLP -> z;  z -> MLP -> one categorical per attribute.
The training objective (sub-sampled ELBOs) is mmjax/objectives/mvae.py ("mvae"; `cross_image_weight` > 0 adds a
cross-modal image term to ELBO_labels that is not in the paper, 0 = the paper's objective); the evaluator is "mvae"
(mmjax/evals/generative_evals.py). Shapes: latent `[B, latent_dim]`; `image_size` divisible by 2**len(channels).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import MmjaxError
from mmjax.registry import MODELS

# The class counts of the generated shapes' attributes (mmjax.data.shapes SHAPES, COLOURS, SIZES, POSITIONS; given
# here because models import no data module: tests/test_mvae.py checks that they agree).
NUM_CLASSES = {"shape": 6, "colour": 8, "size": 3, "position": 9}
LOGVAR_MIN, LOGVAR_MAX = -8.0, 8.0


def product_of_experts(mus: jax.Array, logvars: jax.Array, mask: jax.Array | None = None,
                       prior: bool = True) -> tuple[jax.Array, jax.Array]:
  """Product of diagonal Gaussian experts mus, logvars [E, B, D] (mask [E, B]: 1 = expert present) times the
  N(0, I) prior expert (if `prior`) -> (mu, logvar) [B, D]: precisions add, the mean is precision-weighted."""
  mus, logvars = jnp.asarray(mus, jnp.float32), jnp.asarray(logvars, jnp.float32)
  precision = jnp.exp(-logvars)
  if mask is not None:
    precision = precision * jnp.asarray(mask, jnp.float32)[..., None]
  total = jnp.sum(precision, axis=0) + (1.0 if prior else 0.0)
  mu = jnp.sum(mus * precision, axis=0) / total
  return mu, -jnp.log(total)


def one_hot_labels(labels: dict[str, jax.Array], attributes: Sequence[str]) -> jax.Array:
  """{attribute: int [B] or [B, K]} -> concatenated one-hots [B, sum of class counts] (first column of [B, K])."""
  parts = []
  for a in attributes:
    y = jnp.asarray(labels[a])
    y = y[:, 0] if y.ndim == 2 else y
    parts.append(jax.nn.one_hot(y, NUM_CLASSES[a], dtype=jnp.float32))
  return jnp.concatenate(parts, axis=-1)


def first_column(y: jax.Array) -> jax.Array:
  y = jnp.asarray(y)
  return y[:, 0] if y.ndim == 2 else y


def _split_gaussian(h: jax.Array, latent: int) -> tuple[jax.Array, jax.Array]:
  return h[:, :latent], jnp.clip(h[:, latent:], LOGVAR_MIN, LOGVAR_MAX)


@MODELS.register("mvae")
class MVAE(nn.Module):
  """Image + labels MVAE. `__call__(image, shape, colour, size, position)` runs every part (for `init`); the
  objective and evaluator use the methods `encode_image`, `encode_labels`, `posterior`, `decode_image`,
  `decode_labels`."""
  image_size: int = 32
  latent_dim: int = 16
  channels: Sequence[int] = (32, 64, 64)
  hidden: int = 256
  attributes: Sequence[str] = ("shape", "colour", "size", "position")
  image_log_scale_init: float = -1.0
  learn_image_scale: bool = True   # False: the image likelihood's log-scale stays at image_log_scale_init
  label_weight: float = 50.0     # lambda of the labels' log-likelihood in training (objective "mvae")
  beta: float = 1.0              # weight of the KL term in training
  cross_image_weight: float = 0.0  # not in the paper (0 = paper): weight of log p(image | z ~ q(z | labels))

  def setup(self):
    chans = tuple(self.channels)
    down = 2 ** len(chans)
    if self.image_size % down:
      raise MmjaxError(f"model.image_size={self.image_size} must be divisible by 2**len(model.channels)={down}")
    bad = [a for a in self.attributes if a not in NUM_CLASSES]
    if bad or not self.attributes:
      raise MmjaxError(f"config key model.attributes={list(self.attributes)}: use a non-empty subset of "
                       f"{list(NUM_CLASSES)}")
    self.base = self.image_size // down
    self.enc_convs = [nn.Conv(c, (4, 4), strides=(2, 2), padding="SAME", name=f"enc_conv_{i}")
                      for i, c in enumerate(chans)]
    self.enc_fc = nn.Dense(self.hidden, name="enc_fc")
    self.enc_out = nn.Dense(2 * self.latent_dim, name="enc_out")
    self.dec_fc = nn.Dense(self.hidden, name="dec_fc")
    self.dec_map = nn.Dense(self.base * self.base * chans[-1], name="dec_map")
    up = list(reversed(chans[:-1])) + [3]
    self.dec_convs = [nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", name=f"dec_conv_{i}")
                      for i, c in enumerate(up)]
    if self.learn_image_scale:
      self.image_log_scale = self.param("image_log_scale", nn.initializers.constant(self.image_log_scale_init),
                                        (3,))
    else:
      self.image_log_scale = jnp.full((3,), self.image_log_scale_init, jnp.float32)
    self.lab_enc = [nn.Dense(self.hidden, name="lab_enc_0"), nn.Dense(self.hidden, name="lab_enc_1"),
                    nn.Dense(2 * self.latent_dim, name="lab_enc_out")]
    self.lab_dec = [nn.Dense(self.hidden, name="lab_dec_0"), nn.Dense(self.hidden, name="lab_dec_1"),
                    nn.Dense(sum(NUM_CLASSES[a] for a in self.attributes), name="lab_dec_out")]

  # ------------------------------------------------------------------ experts
  def encode_image(self, image: jax.Array) -> tuple[jax.Array, jax.Array]:
    """image [B, H, W, 3] -> (mu, logvar) [B, latent_dim]."""
    if image.ndim != 4 or image.shape[1] != self.image_size:
      raise MmjaxError(f"mvae: image of shape {tuple(image.shape)}, expected [B, {self.image_size}, "
                       f"{self.image_size}, 3]; set data.image_size = model.image_size")
    h = image.astype(jnp.float32)
    for conv in self.enc_convs:
      h = nn.relu(conv(h))
    h = nn.relu(self.enc_fc(h.reshape(h.shape[0], -1)))
    return _split_gaussian(self.enc_out(h), self.latent_dim)

  def encode_labels(self, labels: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """{attribute: int [B] or [B, K]} -> (mu, logvar) [B, latent_dim]."""
    h = one_hot_labels(labels, self.attributes)
    for layer in self.lab_enc[:-1]:
      h = nn.relu(layer(h))
    return _split_gaussian(self.lab_enc[-1](h), self.latent_dim)

  def posterior(self, image: jax.Array | None = None, labels: dict | None = None,
                batch_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """q(z | the given modalities): product of the given experts and the prior; none given -> the prior."""
    experts = []
    if image is not None:
      experts.append(self.encode_image(image))
    if labels is not None:
      experts.append(self.encode_labels(labels))
    if not experts:
      if batch_size is None:
        raise MmjaxError("mvae.posterior: give a modality or batch_size")
      zeros = jnp.zeros((batch_size, self.latent_dim), jnp.float32)
      return zeros, zeros
    return product_of_experts(jnp.stack([m for m, _ in experts]), jnp.stack([v for _, v in experts]))

  # ------------------------------------------------------------------ decoders
  def decode_image(self, z: jax.Array) -> jax.Array:
    """z [B, latent_dim] -> the mean image [B, H, W, 3] (the likelihood's scale is `image_scale`)."""
    h = nn.relu(self.dec_fc(z))
    h = nn.relu(self.dec_map(h)).reshape(z.shape[0], self.base, self.base, -1)
    for i, conv in enumerate(self.dec_convs):
      h = conv(h)
      if i < len(self.dec_convs) - 1:
        h = nn.relu(h)
    return h

  def image_scale(self) -> jax.Array:
    """Per-channel log standard deviation [3] of the image likelihood."""
    return self.image_log_scale

  def decode_labels(self, z: jax.Array) -> dict[str, jax.Array]:
    """z [B, latent_dim] -> {attribute: logits [B, classes]}."""
    h = z
    for layer in self.lab_dec[:-1]:
      h = nn.relu(layer(h))
    logits = self.lab_dec[-1](h)
    out, start = {}, 0
    for a in self.attributes:
      out[a] = logits[:, start:start + NUM_CLASSES[a]]
      start += NUM_CLASSES[a]
    return out

  def __call__(self, image, shape, colour, size, position, train: bool = False):
    labels = dict(shape=shape, colour=colour, size=size, position=position)
    mu, logvar = self.posterior(image, labels)
    return self.decode_image(mu), self.decode_labels(mu), self.image_scale()
