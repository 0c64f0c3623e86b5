r"""``NeuralCollapse``: the neural-collapse statistics of a classifier's features.

Papyan, Han & Donoho (2020), "Prevalence of neural collapse during the terminal phase of
deep learning training" (PNAS 117, 24652), Sec. 3 and Fig. 6, in the form Dang et al.
(2023, "Neural Collapse in Deep Linear Networks", ICML, Sec. 5) measure it. For the
features ``h_i`` (``d``-vectors, one per training example ``i`` of class ``y_i``; the
output of a layer of the model, read through ``model.activations``), the class means
``mu_k = (1/n_k) sum_{y_i = k} h_i``, the global mean ``mu_G = (1/N) sum_i h_i`` and

    Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
    Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T,

* ``nc1 = tr(Sigma_W Sigma_B^+) / K`` (within-class variability relative to the
  between-class one; 0 at collapse). With ``Mbar = [mu_k - mu_G]`` (``d x K``), ``Sigma_B^+
  = K (Mbar^+)^T Mbar^+``, so ``nc1 = tr(Mbar^+ Sigma_W (Mbar^+)^T)``: the pseudo-inverse
  of the ``d x K`` matrix of centred means, better conditioned than that of ``Sigma_B``;
* ``feature_gram = Hbar^T Hbar`` (``K x K``, ``Hbar = [mu_k]``, uncentred: the bias-free
  geometry of Dang et al. is that of the raw means) and ``centered_feature_gram =
  Mbar^T Mbar``;
* ``readout_gram = W W^T`` (``K x K``) of the model's last weight matrix ``W`` (the
  leaf ``"w"`` of the last layer of the parameters, ``(d_in, K)`` in the ``MLP``
  layout, so ``W W^T`` is ``w^T w``);
* ``class_mean_outputs``: the mean raw output ``g`` over each class (``K x K``: class,
  output), whose diagonal dominance is the self-duality of the classifier and the
  means (NC3) seen through the outputs.

Labels: the arg-max of one-hot (mse) targets, or integer labels. ``features``: the key of
``model.activations`` to read (default: the penultimate entry, the input of the
readout's last weight matrix being that entry's output).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from dynamics import runtime
from dynamics.losses import split
from dynamics.observables import Observable


def class_statistics(h, onehot):
    """``(means (K, d), global mean (d,), Sigma_W (d, d))`` of features ``h`` (``N x d``)
    with one-hot labels ``onehot`` (``N x K``)."""
    counts = jnp.sum(onehot, axis=0)
    means = (onehot.T @ h) / counts[:, None]
    centred = h - onehot @ means
    sigma_w = centred.T @ centred / h.shape[0]
    return means, jnp.mean(h, axis=0), sigma_w


def nc1(h, onehot):
    """``tr(Sigma_W Sigma_B^+) / K`` (module doc)."""
    means, mu_g, sigma_w = class_statistics(h, onehot)
    mbar = (means - mu_g).T                                         # (d, K)
    pinv = runtime.unbatched_lapack(jnp.linalg.pinv)(mbar)         # (K, d)
    return jnp.trace(pinv @ sigma_w @ pinv.T)


@dataclasses.dataclass(frozen=True)
class NeuralCollapse(Observable):
    """``nc1``, ``feature_gram``, ``centered_feature_gram``, ``readout_gram`` and
    ``class_mean_outputs`` of the training set (module doc)."""

    features: str | None = None

    dims: ClassVar = {"feature_gram": ("class", "class2"),
                      "centered_feature_gram": ("class", "class2"),
                      "readout_gram": ("class", "class2"),
                      "class_mean_outputs": ("class", "output")}
    descriptions: ClassVar = {
        "nc1": ("NC1 within-class variability", "tr(Sigma_W Sigma_B^+)/K of the features "
                "(Sigma_W = (1/N) sum_i (h_i - mu_yi)(h_i - mu_yi)^T, Sigma_B = (1/K) "
                "sum_k (mu_k - mu_G)(mu_k - mu_G)^T; Papyan et al. 2020)"),
        "feature_gram": ("class-mean Gram", "Hbar^T Hbar, Hbar = [mu_1 ... mu_K] the "
                         "class means of the features (uncentred)"),
        "centered_feature_gram": ("centred class-mean Gram", "(Hbar - mu_G 1^T)^T "
                                  "(Hbar - mu_G 1^T)"),
        "readout_gram": ("readout Gram", "W W^T of the last weight matrix W (K x d_in)"),
        "class_mean_outputs": ("class-mean outputs", "mean raw output g over the examples "
                               "of each class (class, output)"),
    }

    def bind(self, spec):
        x = spec.task.x_train[:2]
        params = spec.model.init(jax.random.PRNGKey(0), x)
        last = params[-1] if isinstance(params, (tuple, list)) and params else None
        if not (isinstance(last, dict) and getattr(last.get("w"), "ndim", 0) == 2):
            raise ValueError("NeuralCollapse reads the readout as the leaf 'w' (d_in, K) of "
                             "the parameters' last layer (the MLP layout); "
                             f"{type(spec.model).__name__} has no such leaf")
        keys = list(spec.model.activations(params, x))
        if len(keys) < 2:
            raise ValueError("NeuralCollapse needs a model with a layer before its readout "
                             f"(activations {keys})")
        features = keys[-2] if self.features is None else self.features
        if features not in keys:
            raise ValueError(f"features must be one of the model's activations {keys}, got "
                             f"{self.features!r}")
        return dataclasses.replace(self, features=features)

    def __call__(self, ctx):
        x = ctx.data["x_train"]
        acts = ctx.model.activations(ctx.params, x, ctx.hparams)
        h = acts[self.features].reshape(x.shape[0], -1)
        out = list(acts.values())[-1]
        y, _ = split(ctx.data["y_train"])
        k = out.shape[-1]
        labels = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, axis=-1)
        onehot = jax.nn.one_hot(labels, k, dtype=h.dtype)
        means, mu_g, _ = class_statistics(h, onehot)
        w = ctx.params[-1]["w"]
        counts = jnp.sum(onehot, axis=0)
        return {
            "nc1": nc1(h, onehot),
            "feature_gram": means @ means.T,
            "centered_feature_gram": (means - mu_g) @ (means - mu_g).T,
            "readout_gram": w.T @ w,
            "class_mean_outputs": (onehot.T @ out) / counts[:, None],
        }
