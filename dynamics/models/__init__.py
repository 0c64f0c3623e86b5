"""Models: one file per architecture, and the flax adapter.

* ``base``: the model protocol and the one place where output scale and centering are
  applied (``outputs``);
* ``mlp``: ``MLP`` and its public per-layer description (``MLP.layers``);
* ``residual``: ``ResidualMLP`` (pre-activation blocks, depth-muP branch multipliers);
* ``convnet``: ``ConvNet`` (SAME convolutions, global average pooling);
* ``transformer``: ``Transformer`` (decoder-only, pre-LayerNorm, causal);
* ``river_valley``: ``RiverValley``, a toy river-valley loss landscape written as
  residuals (Wen et al. 2024), its task and the observable of its two parts;
* ``flax_adapter``: ``from_linen`` / ``from_nnx``, a user's flax model with its fields as
  sweep axes, batch statistics and dropout;
* ``flax_mup``: ``with_mup``, a user's flax model in muP, its width dimensions inferred.
"""

from dynamics.models.base import Model, apply_scaled, outputs
from dynamics.models.flax_adapter import FlaxModel, from_linen, from_nnx
from dynamics.models.flax_mup import MuP, MuPModel, with_mup
from dynamics.models.convnet import ConvNet
from dynamics.models.mlp import MLP, Layer
from dynamics.models.residual import ResidualMLP
from dynamics.models.river_valley import RiverValley
from dynamics.models.transformer import Transformer

__all__ = ["ConvNet", "FlaxModel", "Layer", "MLP", "Model", "MuP", "MuPModel", "ResidualMLP",
           "RiverValley", "Transformer", "apply_scaled", "from_linen", "from_nnx", "outputs",
           "with_mup"]
