"""SEAM network (Wang et al., CVPR 2020): ResNet-38 CAM classifier + pixel correlation module (PCM), NHWC.

Reproduces `network/resnet38_SEAM.py` of the official code (YudeWang/SEAM @ 3212261):

  conv6 --dropout7 (Dropout2d 0.5)--> fc8 (1x1, 4096 -> 21, no bias)  = cam_lowres  [B, h, w, 21], h = ceil(H/8)
  PCM input (no gradient, from cam_lowres):
      cam_d = relu(cam);  cam_d_norm = relu(cam_d - 1e-5) / (max_hw(cam_d) + 1e-5)       per (sample, channel)
      channel 0 (bg)   = 1 - max over the 20 fg channels (the fc8 bg logit is discarded; no label mask)
      fg channels      : every value below the per-pixel fg max is set to 0 (ties keep all)
  PCM features: concat[x_s (3), relu(f8_3(conv4)) (64), relu(f8_4(conv5)) (128)] = 195 channels, where
      x_s is the normalised input image bilinearly resized to (h, w) with align_corners=True and conv4/conv5
      are detached backbone taps (so the PCM never trains the backbone).
  PCM: f = f9(features) (1x1, 195 -> 192, no activation); f /= (||f||_2 over channels + 1e-5);
      aff[i, j] = relu(f_i . f_j);  aff[:, j] /= (sum_i aff[i, j] + 1e-5)  (normalised over the "from" axis);
      cam_rv[j, c] = sum_i cam_d_norm[i, c] aff[i, j]
  Outputs: cam and cam_rv bilinearly upsampled to the input size with align_corners=True (raw logits / raw
      PCM output, all 21 channels; channel 0 of `cam` is a dead bg logit that no loss reaches).

Initialisers as official: fc8 xavier_uniform (gain 1), f8_3/f8_4 kaiming_normal (fan_in, std sqrt(2/fan_in)),
f9 xavier_uniform with gain 4. Variable names are the official state-dict names (flat: `conv1a.weight`,
`b4_3.conv_branch2a.weight`, `fc8.weight`, `f9.weight`, ...), so `jaxseg.models.convert` and
`jaxseg.models.seeded` map official checkpoints and seeded reference weights directly.

Optimiser groups (`get_parameter_groups` + `not_training` in the official code): fc8, f8_3, f8_4, f9 are
trained from scratch at 10x the base learning rate (`FROM_SCRATCH_LAYERS`); conv1a, b2, b2_1, b2_2 are frozen
(`NOT_TRAINING_LAYERS`); every BatchNorm is frozen (kept in 'batch_stats' by the backbone, out of the optimiser).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import conv2d
from jaxseg.models.resize import resize_bilinear
from jaxseg.models.resnet38 import ResNet38

Dtype = Any

NUM_CLASSES = 21  # VOC: channel 0 is the background slot, 1..20 the foreground classes.

# Regexes (re.search) on '/'-joined Flax parameter paths such as 'fc8/kernel' or 'params/b2_1/conv_branch1/kernel'.
FROM_SCRATCH_LAYERS = (
    r"(^|/)(fc8|f8_3|f8_4|f9)/"  # official `from_scratch_layers`: 10x learning rate
)
NOT_TRAINING_LAYERS = r"(^|/)(conv1a|b2|b2_1|b2_2)/"  # official `not_training`: requires_grad=False
FROM_SCRATCH_LR_MULTIPLIER = 10.0

# Official layer initialisers (`torch.nn.init` calls in resnet38_SEAM.Net.__init__).
XAVIER_UNIFORM = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
XAVIER_UNIFORM_GAIN4 = nn.initializers.variance_scaling(16.0, "fan_avg", "uniform")  # gain**2 = 16
KAIMING_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # untruncated, as torch


# ------------------------------------------------------------------------------------------------------------
# PCM pieces (pure functions, float32).


def pcm_cam_input(cam_lowres: jax.Array) -> jax.Array:
  """The official no_grad PCM input `cam_d_norm` from raw fc8 logits.

  Args:
    cam_lowres: [B, h, w, C] raw logits, channel 0 = bg slot.
  Returns:
    float32 [B, h, w, C], gradient-free: per (sample, channel) relu(cam - 1e-5) / (max_hw relu(cam) + 1e-5);
    channel 0 replaced by 1 - max over channels 1.. (all of them: no label mask, in training and inference);
    in channels 1.. only the per-pixel maximum keeps its value (values < max become 0, ties keep all).
  """
  chex.assert_rank(cam_lowres, 4)
  cam = jax.nn.relu(jax.lax.stop_gradient(cam_lowres).astype(jnp.float32))
  peak = jnp.max(cam, axis=(1, 2), keepdims=True) + 1e-5
  norm = jax.nn.relu(cam - 1e-5) / peak
  fg = norm[..., 1:]
  fg_max = jnp.max(fg, axis=-1, keepdims=True)
  fg = jnp.where(fg < fg_max, 0.0, fg)
  return jnp.concatenate([1.0 - fg_max, fg], axis=-1)


def pcm_propagate(cam: jax.Array, embeddings: jax.Array) -> jax.Array:
  """Re-weights `cam` with the normalised cosine affinity of `embeddings` (official `Net.PCM` after f9).

  Args:
    cam: [B, h, w, C] PCM input (see `pcm_cam_input`).
    embeddings: [B, h, w, D] f9 output (no activation).
  Returns:
    float32 [B, h, w, C]: cam_rv[j] = sum_i cam[i] aff[i, j] / (sum_i aff[i, j] + 1e-5),
    aff[i, j] = relu(<f_i, f_j>), f = embeddings / (||embeddings||_2 + 1e-5). Dense (hw x hw) per sample.
  """
  chex.assert_rank([cam, embeddings], 4)
  chex.assert_equal_shape_prefix([cam, embeddings], 3)
  b, h, w, c = cam.shape
  f = embeddings.astype(jnp.float32).reshape(b, h * w, -1)
  f = f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-5)
  hi = jax.lax.Precision.HIGHEST
  aff = jax.nn.relu(jnp.einsum("bid,bjd->bij", f, f, precision=hi))
  aff = aff / (
      jnp.sum(aff, axis=1, keepdims=True) + 1e-5
  )  # over i (torch dim=1): columns sum to ~1
  cam_rv = jnp.einsum(
      "bij,bic->bjc", aff, cam.astype(jnp.float32).reshape(b, h * w, c), precision=hi
  )
  return cam_rv.reshape(b, h, w, c)


# ------------------------------------------------------------------------------------------------------------
# Modules.


class SEAMHead(nn.Module):
  """fc8 CAM classifier and the PCM on top of ResNet-38 features (see the module docstring).

  Applied by `SEAMNet` in its own scope, so the variables are flat (`fc8`, `f8_3`, `f8_4`, `f9`); it can be
  applied alone with a full SEAMNet variable tree (e.g. to get head gradients on fixed features).

  Attributes:
    num_classes: fc8 outputs including the bg slot (21 for VOC).
    use_pcm: False gives the plain CAM network (no f8_3/f8_4/f9, outputs `cam` / `cam_lowres` only).
    dropout: apply dropout7 (Dropout2d 0.5) when `train` (official True).
    dtype / param_dtype: compute / parameter dtypes of the convolutions; the PCM affinity and every output
      are computed in float32.
  """

  num_classes: int = NUM_CLASSES
  use_pcm: bool = True
  dropout: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
      self, images: jax.Array, features: Mapping[str, jax.Array], train: bool
  ) -> dict[str, jax.Array]:
    """images: [B, H, W, 3] normalised RGB (the network input); features: ResNet38 taps 'conv4', 'conv5',
    'conv6' ([B, h, w, *], h = ceil(H / 8)). Returns the dict described in `SEAMNet.__call__`."""
    chex.assert_rank(images, 4)
    conv6 = features["conv6"]
    chex.assert_rank(conv6, 4)
    out_size = images.shape[1:3]
    conv = functools.partial(
        conv2d, kernel=1, padding=0, dtype=self.dtype, param_dtype=self.param_dtype
    )

    # Dropout2d: whole channels per sample (mask broadcast over H, W).
    x = nn.Dropout(0.5 if self.dropout else 0.0, broadcast_dims=(1, 2), deterministic=not train)(
        conv6
    )
    cam_lowres = conv(self.num_classes, kernel_init=XAVIER_UNIFORM, name="fc8")(x).astype(
        jnp.float32
    )
    out = {
        "cam_lowres": cam_lowres,
        "cam": resize_bilinear(cam_lowres, out_size, align_corners=True),
    }
    if not self.use_pcm:
      return out

    h, w = cam_lowres.shape[1:3]
    cam_in = pcm_cam_input(cam_lowres)
    # The backbone taps are detached: PCM losses train f8_3, f8_4 and f9 only.
    f8_3 = nn.relu(
        conv(64, kernel_init=KAIMING_NORMAL, name="f8_3")(jax.lax.stop_gradient(features["conv4"]))
    )
    f8_4 = nn.relu(
        conv(128, kernel_init=KAIMING_NORMAL, name="f8_4")(jax.lax.stop_gradient(features["conv5"]))
    )
    # Point-sampled (align_corners=True, no antialiasing) normalised image at the feature resolution.
    x_s = resize_bilinear(images, (h, w), align_corners=True)
    pcm_features = jnp.concatenate(
        [x_s.astype(self.dtype), f8_3.astype(self.dtype), f8_4.astype(self.dtype)], axis=-1
    )
    embeddings = conv(192, kernel_init=XAVIER_UNIFORM_GAIN4, name="f9")(pcm_features)
    # (Official PCM first resizes the cam to the feature size: a no-op, both are (h, w).)
    cam_rv_lowres = pcm_propagate(cam_in, embeddings)
    out.update(
        cam_rv=resize_bilinear(cam_rv_lowres, out_size, align_corners=True),
        cam_rv_lowres=cam_rv_lowres,
        pcm_cam_in=cam_in,
        pcm_features=pcm_features.astype(jnp.float32),
        f9=embeddings.astype(jnp.float32),
    )
    return out


class SEAMNet(nn.Module):
  """ResNet-38 + SEAM head, as `network/resnet38_SEAM.Net` (NHWC).

  Attributes:
    num_classes: fc8 outputs including the bg slot (21 for VOC).
    width_multiplier: ResNet-38 channel scale (1.0 official; e.g. 0.125 for CPU demos). The PCM widths
      (64, 128, 192) stay official.
    use_pcm: False = plain CAM baseline network.
    dropout: Dropout2d in b6, b7 (backbone) and dropout7 when `train` (official True; training needs a
      'dropout' rng then).
    frozen_bn: BatchNorm uses running statistics with frozen affine parameters (official True);
      False = batch statistics and trainable scale/bias, for training from scratch (synthetic demos).
    dtype / param_dtype: compute dtype (e.g. jnp.bfloat16) and parameter dtype (float32).
  """

  num_classes: int = NUM_CLASSES
  width_multiplier: float = 1.0
  use_pcm: bool = True
  dropout: bool = True
  frozen_bn: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    """Forward pass.

    Args:
      images: [B, H, W, 3] normalised RGB (ImageNet mean/std).
      train: dropout on (BatchNorm is always frozen, as official).
    Returns:
      float32 maps, h = ceil(H / 8):
        'cam'          [B, H, W, K] raw fc8 logits, bilinear (align_corners=True) upsampled; channel 0 = bg slot
        'cam_lowres'   [B, h, w, K] raw fc8 logits
      with `use_pcm` also:
        'cam_rv'        [B, H, W, K] PCM-refined cam, upsampled like 'cam' (inference uses this one)
        'cam_rv_lowres' [B, h, w, K]
        'pcm_cam_in'    [B, h, w, K] the no-grad PCM input (`pcm_cam_input`)
        'pcm_features'  [B, h, w, 195] concat[image at (h, w), relu(f8_3), relu(f8_4)]
        'f9'            [B, h, w, 192] f9 output
      and the backbone taps 'conv4' [B, h, w, 512w], 'conv5' [B, h, w, 1024w], 'conv6' [B, h, w, 4096w]
      (in `dtype`).
    """
    chex.assert_rank(images, 4)
    if images.shape[-1] != 3:
      raise ValueError(f"SEAMNet expects NHWC RGB images [B, H, W, 3], got shape {images.shape}")
    backbone = ResNet38(
        width_multiplier=self.width_multiplier,
        dropout=self.dropout,
        dtype=self.dtype,
        frozen_bn=self.frozen_bn,
        bn_affine_trainable=not self.frozen_bn,
        param_dtype=self.param_dtype,
        name="backbone",
    )
    head = SEAMHead(
        num_classes=self.num_classes,
        use_pcm=self.use_pcm,
        dropout=self.dropout,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="head",
    )
    # Official state-dict names are flat (`b4_3.*`, `fc8.*`): both submodules live in this module's scope.
    nn.share_scope(self, backbone)
    nn.share_scope(self, head)
    features = backbone(images, train)
    out = head(images, features, train)
    out.update(conv4=features["conv4"], conv5=features["conv5"], conv6=features["conv6"])
    return out
