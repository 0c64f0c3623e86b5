r"""``Transformer``: a decoder-only, pre-LayerNorm causal transformer, its scales set by its
parametrization.

Integer tokens ``x`` of shape ``(batch, T)`` give one output vector per position,
``(batch, T, vocab_size)``. With ``E`` the token embedding, ``P`` the learned positional
embedding, ``LN`` a LayerNorm (Ba, Kiros & Hinton 2016) and every parameter ``theta`` used
in the forward pass as ``m_theta * theta`` (its forward multiplier):

.. math::

    h^0_t &= m_E E_{x_t} + m_P P_t, \\
    h^{l+\frac12} &= h^l + \mathrm{Attn}_l(\mathrm{LN}_{l,1}(h^l)), \qquad
    h^{l+1} = h^{l+\frac12} + \mathrm{MLP}_l(\mathrm{LN}_{l,2}(h^{l+\frac12})), \\
    g_t &= m_R\, \mathrm{LN}_f(h^L_t)\, W_R + m_b b_R

(the pre-LN ordering of Xiong et al. 2020, "On layer normalization in the transformer
architecture", Fig. 1(b); GPT-2, Radford et al. 2019). Causal multi-head attention
(Vaswani et al. 2017, eq. 1) with ``H = heads`` heads of dimension ``d = width / heads``:
``q, k, v`` the ``d``-slices of head ``i`` of ``m_Q a W_Q + m_{b_Q} b_Q`` (the same for
keys and values),

.. math::

    s_{ts} = \tau\, q_t \cdot k_s \ (s \le t), \qquad
    \mathrm{Attn}(a)_t = m_O\, \Bigl[\textstyle\sum_{s \le t}
    \mathrm{softmax}_s(s_{t\cdot})\, v_s\Bigr]_{\text{heads}} W_O + m_{b_O} b_O,

with ``tau = parametrization.attention_scale`` (``1/sqrt(d)`` for ``standard`` and ``ntk``,
``sqrt(d_0)/d`` for ``mup``: Yang et al. 2022, Sec. 4 and Table 3). With
``qk_layernorm`` the queries and keys are layer-normalised over each head's ``d``
coordinates before the product (Dehghani et al. 2023, "Scaling vision transformers to 22
billion parameters", Sec. 2, "QK normalization"; Wortsman et al. 2023, "Small-scale
proxies for large-scale Transformer training instabilities", Sec. 3.1.1), one gain (and
bias) of ``d`` entries shared by the heads. The MLP is ``m_2 GELU(m_1 a W_1 + m_{b_1} b_1)
W_2 + m_{b_2} b_2`` with hidden size ``mlp_ratio * width`` and the exact GELU
(``dynamics.activations``). LayerNorm is ``(a - mean(a)) / sqrt(var(a) + 1e-5) * m_g g +
m_beta beta`` over the last axis (eps ``LAYER_NORM_EPS``, PyTorch's default).

Parametrization. Every parameter has a role and its fan-in and fan-out, and
``dynamics.parametrization.role_scale`` turns them into the init standard deviation,
forward multiplier and learning-rate multiplier (``Transformer.parameters`` is the public
description):

=============================  =========  ===========  =============  =====================
parameter                      role       fan_in       fan_out        base shapes
=============================  =========  ===========  =============  =====================
token embedding ``E (V, D)``   embedding  ``V``        ``D``          ``(None, D_0)``
positions ``P (max_len, D)``   embedding  ``max_len``  ``D``          ``(None, D_0)``
``W_Q, W_K, W_V, W_O (D, D)``  hidden     ``D``        ``D``          ``(D_0, D_0)``
``W_1 (D, r D)``               hidden     ``D``        ``r D``        ``(D_0, r D_0)``
``W_2 (r D, D)``               hidden     ``r D``      ``D``          ``(r D_0, D_0)``
readout ``W_R (D, V)``         readout    ``D``        ``V``          ``(D_0, None)``
a layer's output bias          bias       1            its fan_out    ``(None, its base)``
LayerNorm gains                norm       1            ``D`` (``d``)  ``(None, D_0 (d_0))``
LayerNorm biases               bias       1            ``D`` (``d``)  ``(None, D_0 (d_0))``
=============================  =========  ===========  =============  =====================

(``d``, ``d_0`` for the qk-layernorms) with ``D = width``, ``D_0 = base_width``,
``r = mlp_ratio``, ``d_0 = base_width / heads``
(the number of heads is fixed as the width grows, so the head dimension grows, as in
Yang et al. 2022, Sec. 4) and ``V = vocab_size``; ``sigma = sigma_w`` for weights and
embeddings and ``sigma_b`` for biases. So ``standard`` draws hidden weights
``N(0, sigma_w^2 / fan_in)`` and embeddings ``N(0, sigma_w^2)`` (``nn.Embedding``'s
default at ``sigma_w = 1``); ``ntk`` draws ``N(0, 1)`` and multiplies by ``sigma_w /
sqrt(fan_in)`` (biases: by ``sigma_b``, so ``sigma_b = 0`` makes them inert); ``mup`` is
microsoft/mup's form (Yang et al. 2022, Table 8), equal to ``standard`` at ``width ==
base_width``: the readout is multiplied by ``1/r_in = D_0 / D`` (``MuReadout``; drawn zero
with ``zero_readout``, which only ``mup`` reads, as ``role_scale``), the attention scale is
``sqrt(d_0)/d``, and the learning rates are multiplied by the table of ``role_scale``
(SGD: ``r_out`` for embeddings, biases and gains, ``r_out / r_in = 1`` for the hidden
matrices, ``r_in`` for the readout; Adam: ``1/r_in`` for hidden matrices, 1 otherwise).

Tied embeddings (``tied_embeddings``, Press & Wolf 2017): there is no ``W_R``; the readout
is ``g = m_R LN_f(h) E^T + m_b b_R``. As in microsoft/mup (``MuSharedReadout``), the
shared matrix is the input embedding: its init and learning-rate multiplier are the
embedding's, and the readout applies the readout role's forward multiplier ``m_R``
(``standard`` 1, ``ntk`` ``sigma_w / sqrt(D)``, ``mup`` ``1/r_in = D_0 / D``).
``zero_readout`` would zero the embedding, so it is refused with tied embeddings.

``apply`` gives the raw outputs ``g``; the output scale ``alpha = output_scale`` (Chizat,
Oyallon & Bach 2019) and centering (``center``: ``f = alpha (g - g_0)``) are the loop's
(``dynamics.models.base``).

Probes of the training instabilities (Wortsman et al. 2023, Sec. 3.1): ``activations``
(every block's output, for the coordinate check), ``attention_logits`` and
``max_attention_logits`` (the largest ``|s_ts|`` per block, the attention-logit growth of
Sec. 3.1.1 and Dehghani et al. 2023, Sec. 2); the output logits' log-partition is
measured by ``dynamics.observables_transformer.LogPartition``.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynamics import activations, parametrization
from dynamics.checks import check_bool, check_int, is_real

LAYER_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class Parameter:
    """The public description of one parameter tensor of a ``Transformer``: its ``path``
    in the params pytree (``"blocks.0.attention.query.w"``), ``role`` (of
    ``dynamics.parametrization.ROLES``), ``shape``, fan-in and fan-out and their base
    values (``None``: the dimension does not grow with width), and the ``scale``
    (``init_std``, ``multiplier``, ``lr_multiplier``, ``init_mean``) that
    ``parametrization.role_scale`` gives them."""

    path: str
    role: str
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    base_fan_in: int | None
    base_fan_out: int | None
    scale: parametrization.Scale


@dataclasses.dataclass(frozen=True)
class Transformer:
    """A decoder-only pre-LayerNorm causal transformer (see the module doc).

    ``params`` is ``{"embedding": {"tokens", "positions"}, "blocks": ({"norm1",
    "attention": {"query", "key", "value", "out"[, "query_norm", "key_norm"]}, "norm2",
    "mlp": {"hidden", "out"}}, ...), "final_norm", "readout"}`` with dense layers
    ``{"w": (fan_in, fan_out)[, "b": (fan_out,)]}`` and norms ``{"gain"[, "bias"]}``;
    ``readout`` holds only its bias (or nothing) with tied embeddings.

    ``max_len`` is the number of learned positions (``None``: the length of the inputs
    given to ``init``); inputs may be shorter. ``base_width`` is the width of the muP base
    model (the width at which ``mup`` equals ``standard``); it must be divisible by
    ``heads`` (the base head dimension is ``base_width / heads``).
    """

    vocab_size: int
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    max_len: int | None = None
    parametrization: str = "standard"
    base_width: int = 64
    qk_layernorm: bool = False
    bias: bool = True
    tied_embeddings: bool = False
    zero_readout: bool = False
    center: bool = False
    output_scale: float = 1.0
    sigma_w: float = 1.0
    sigma_b: float = 0.1

    def __post_init__(self):
        check_int("vocab_size", self.vocab_size)
        check_int("width", self.width)
        check_int("depth", self.depth, minimum=0)
        check_int("heads", self.heads)
        check_int("mlp_ratio", self.mlp_ratio)
        check_int("base_width", self.base_width)
        if self.max_len is not None:
            check_int("max_len", self.max_len)
        parametrization.check(self.parametrization)
        for name in ("qk_layernorm", "bias", "tied_embeddings", "zero_readout", "center"):
            check_bool(name, getattr(self, name))
        if self.width % self.heads:
            raise ValueError(f"heads must divide width={self.width}, got heads={self.heads}")
        if self.base_width % self.heads:
            raise ValueError(f"heads must divide base_width={self.base_width}, got "
                             f"heads={self.heads}")
        if self.tied_embeddings and self.zero_readout:
            raise ValueError("zero_readout must be False with tied_embeddings=True (the "
                             "readout is the token embedding, which cannot start at zero)")
        self.check_hparams({k: getattr(self, k) for k in ("output_scale", "sigma_w",
                                                          "sigma_b")})

    @staticmethod
    def check_hparams(values: Mapping[str, Any]) -> None:
        """Range checks of the float fields (concrete values only)."""
        for name, value in values.items():
            if not is_real(value) or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite real number, got {value!r}")
            if name in ("output_scale", "sigma_w") and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
            if name == "sigma_b" and not value >= 0:
                raise ValueError(f"sigma_b must be >= 0, got {value!r}")

    # -- description --------------------------------------------------------------------

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def base_head_dim(self) -> int:
        return self.base_width // self.heads

    def hparams(self) -> dict[str, float]:
        names = ["output_scale", "sigma_w"] + (["sigma_b"] if self.bias else [])
        return {n: float(getattr(self, n)) for n in names}

    def values(self, hparams: Mapping | None = None) -> dict:
        """The swept values (defaults overridden by the model's own entries of
        ``hparams``)."""
        hp = self.hparams()
        if hparams:
            hp.update({k: v for k, v in hparams.items() if k in hp})
        hp.setdefault("sigma_b", self.sigma_b)
        return hp

    def attention_scale(self):
        """``tau``, the multiplier of ``q . k`` (``parametrization.attention_scale``)."""
        return parametrization.attention_scale(self.parametrization, self.head_dim,
                                               self.base_head_dim)

    def parameters(self, max_len: int, hparams: Mapping | None = None,
                   family: str = "sgd") -> dict:
        """A pytree like ``params`` of ``Parameter`` descriptions for ``max_len`` learned
        positions and the learning-rate multipliers of the optimizer ``family``."""
        parametrization.check_family(family)
        hp = self.values(hparams)
        D, D0, r, V = self.width, self.base_width, self.mlp_ratio, self.vocab_size
        d, d0 = self.head_dim, self.base_head_dim

        def param(path, role, shape, fan_in, fan_out, base_in, base_out):
            sigma = hp["sigma_b"] if role == "bias" else hp["sigma_w"]
            scale = parametrization.role_scale(
                self.parametrization, role, fan_in=fan_in, fan_out=fan_out,
                base_fan_in=base_in, base_fan_out=base_out, family=family, sigma=sigma,
                zero_readout=self.zero_readout)
            return Parameter(path, role, tuple(shape), fan_in, fan_out, base_in, base_out,
                             scale)

        def dense(path, fan_in, fan_out, base_in, base_out, role="hidden"):
            out = {"w": param(f"{path}.w", role, (fan_in, fan_out), fan_in, fan_out,
                              base_in, base_out)}
            if self.bias:
                out["b"] = param(f"{path}.b", "bias", (fan_out,), 1, fan_out, None, base_out)
            return out

        def norm(path, size, base):
            out = {"gain": param(f"{path}.gain", "norm", (size,), 1, size, None, base)}
            if self.bias:
                out["bias"] = param(f"{path}.bias", "bias", (size,), 1, size, None, base)
            return out

        blocks = []
        for l in range(self.depth):
            p = f"blocks.{l}"
            attention = {name: dense(f"{p}.attention.{name}", D, D, D0, D0)
                         for name in ("query", "key", "value", "out")}
            if self.qk_layernorm:
                attention["query_norm"] = norm(f"{p}.attention.query_norm", d, d0)
                attention["key_norm"] = norm(f"{p}.attention.key_norm", d, d0)
            blocks.append({
                "norm1": norm(f"{p}.norm1", D, D0),
                "attention": attention,
                "norm2": norm(f"{p}.norm2", D, D0),
                "mlp": {"hidden": dense(f"{p}.mlp.hidden", D, r * D, D0, r * D0),
                        "out": dense(f"{p}.mlp.out", r * D, D, r * D0, D0)},
            })
        if self.tied_embeddings:
            readout = {}
            if self.bias:
                readout["b"] = param("readout.b", "bias", (V,), 1, V, None, None)
        else:
            readout = dense("readout", D, V, D0, None, role="readout")
        return {
            "embedding": {
                "tokens": param("embedding.tokens", "embedding", (V, D), V, D, None, D0),
                "positions": param("embedding.positions", "embedding", (max_len, D),
                                   max_len, D, None, D0),
            },
            "blocks": tuple(blocks),
            "final_norm": norm("final_norm", D, D0),
            "readout": readout,
        }

    def readout_multiplier(self, hparams: Mapping | None = None):
        """``m_R``: the readout role's forward multiplier (with tied embeddings the one
        the shared embedding is multiplied by in the readout; module doc)."""
        hp = self.values(hparams)
        return parametrization.role_scale(
            self.parametrization, "readout", fan_in=self.width, fan_out=self.vocab_size,
            base_fan_in=self.base_width, base_fan_out=None, sigma=hp["sigma_w"],
            zero_readout=self.zero_readout).multiplier

    @staticmethod
    def _max_len(params) -> int:
        return params["embedding"]["positions"].shape[0]

    # -- inputs ----------------------------------------------------------------------------

    def check_tokens(self, x, max_len: int | None = None) -> None:
        """``ValueError`` unless ``x`` is an integer array ``(batch, T)`` with ``T <=
        max_len``; concrete tokens must lie in ``[0, vocab_size)`` (traced ones cannot be
        checked: out-of-range tokens then embed as NaN, which makes that example's outputs NaN,
        so that a run on them is reported diverged)."""
        dtype = getattr(x, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.integer):
            raise ValueError(f"Transformer inputs must be integer tokens, got dtype {dtype} "
                             "(use encoding='tokens' for algorithmic tasks)")
        if jnp.ndim(x) != 2:
            raise ValueError(f"Transformer inputs must have shape (batch, T), got shape "
                             f"{jnp.shape(x)}")
        if max_len is not None and x.shape[1] > max_len:
            raise ValueError(f"Transformer inputs have T={x.shape[1]} positions, more than "
                             f"max_len={max_len}")
        if not isinstance(x, jax.core.Tracer) and x.size:
            lo, hi = int(np.min(x)), int(np.max(x))
            if lo < 0 or hi >= self.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"tokens must lie in [0, vocab_size={self.vocab_size}), "
                                 f"got {bad}")

    # -- the protocol -----------------------------------------------------------------

    def init(self, key, x, hparams: Mapping | None = None):
        """Parameters drawn ``init_mean + init_std * N(0, 1)`` by each one's ``Scale``;
        each tensor from ``fold_in(key, crc32(path))``, so a tensor's draw does not depend
        on which others exist (tied or not, biases or not)."""
        max_len = x.shape[1] if self.max_len is None else self.max_len
        self.check_tokens(x, max_len)
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)

        def draw(p: Parameter):
            k = jax.random.fold_in(key, zlib.crc32(p.path.encode()))
            s = p.scale
            return s.init_mean + s.init_std * jax.random.normal(k, p.shape, dtype)

        return jax.tree.map(draw, self.parameters(max_len, hparams))

    def apply(self, params, x, hparams: Mapping | None = None):
        return self._forward(params, x, hparams)[0]

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"):
        desc = self.parameters(self._max_len(params), hparams, family)
        return jax.tree.map(lambda p: p.scale.lr_multiplier, desc)

    def roles(self, params):
        return jax.tree.map(lambda p: p.role, self.parameters(self._max_len(params)))

    def activations(self, params, x, hparams: Mapping | None = None) -> dict:
        """Every block's outputs in forward order, for the coordinate check
        (``dynamics.observables.CoordinateCheck``): ``"embedding"`` (``h^0``),
        ``"block{l}.attention"`` (the attention branch added to the stream),
        ``"block{l}.mlp_hidden"`` (the MLP's pre-activations ``m_1 a W_1 + b_1``),
        ``"block{l}.mlp"`` (the MLP branch), ``"block{l}.residual"`` (the stream
        ``h^{l+1}``), and last ``"logits"``, the raw outputs ``g``; each ``(batch, T,
        features)``."""
        return self._forward(params, x, hparams)[1]

    def attention_logits(self, params, x, hparams: Mapping | None = None) -> tuple:
        """Per block, the scaled logits ``s_ts = tau q_t . k_s`` of every head,
        ``(batch, heads, T, T)``, before the causal mask (entries ``s > t`` are not used)."""
        return self._forward(params, x, hparams)[2]

    def max_attention_logits(self, params, x, hparams: Mapping | None = None):
        """``(depth,)``: per block, ``max |s_ts|`` over the batch, the heads and the
        positions the causal mask allows (``s <= t``) (the attention-logit growth of
        Dehghani et al. 2023, Sec. 2, and Wortsman et al. 2023, Sec. 3.1.1)."""
        logits = self.attention_logits(params, x, hparams)
        if not logits:
            return jnp.zeros((0,), jax.tree.leaves(params)[0].dtype)
        t = x.shape[1]
        allowed = jnp.tril(jnp.ones((t, t), bool))
        return jnp.stack([jnp.max(jnp.where(allowed, jnp.abs(s), 0.0)) for s in logits])

    def config(self) -> dict:
        return {"model": "Transformer", **dataclasses.asdict(self)}

    # -- the forward pass ------------------------------------------------------------------

    def _forward(self, params, x, hparams):
        """``(g, activations, attention logits per block)``."""
        max_len = self._max_len(params)
        self.check_tokens(x, max_len)
        hp = self.values(hparams)
        desc = self.parameters(max_len, hp)
        gelu = activations.get("gelu")
        t = x.shape[1]
        causal = jnp.tril(jnp.ones((t, t), bool))
        tau = self.attention_scale()

        def mult(p: Parameter, value):
            return p.scale.multiplier * value

        def dense(d, p, a):
            out = mult(d["w"], a @ p["w"])
            if self.bias:
                out = out + mult(d["b"], p["b"])
            return out

        def norm(d, p, a):
            mean = jnp.mean(a, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(a - mean), axis=-1, keepdims=True)
            out = (a - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * mult(d["gain"], p["gain"])
            if self.bias:
                out = out + mult(d["bias"], p["bias"])
            return out

        emb, demb = params["embedding"], desc["embedding"]
        # out-of-range tokens (only possible when traced) embed as NaN, never clipped or
        # wrapped: negative ones are sent past the end
        index = jnp.where(x < 0, self.vocab_size, x)
        tokens = jnp.take(emb["tokens"], index, axis=0, mode="fill", fill_value=jnp.nan)
        h = mult(demb["tokens"], tokens) + mult(demb["positions"], emb["positions"][:t])
        acts = {"embedding": h}
        logits_per_block = []
        b, H, dh = x.shape[0], self.heads, self.head_dim
        for l, (d, p) in enumerate(zip(desc["blocks"], params["blocks"])):
            da, pa = d["attention"], p["attention"]
            a = norm(d["norm1"], p["norm1"], h)
            q, k, v = (dense(da[n], pa[n], a).reshape(b, t, H, dh)
                       for n in ("query", "key", "value"))
            if self.qk_layernorm:
                q = norm(da["query_norm"], pa["query_norm"], q)
                k = norm(da["key_norm"], pa["key_norm"], k)
            s = tau * jnp.einsum("bthd,bshd->bhts", q, k)
            logits_per_block.append(s)
            w = jax.nn.softmax(jnp.where(causal, s, -jnp.inf), axis=-1)
            o = jnp.einsum("bhts,bshd->bthd", w, v).reshape(b, t, H * dh)
            att = dense(da["out"], pa["out"], o)
            h = h + att
            hidden = dense(d["mlp"]["hidden"], p["mlp"]["hidden"],
                           norm(d["norm2"], p["norm2"], h))
            mlp = dense(d["mlp"]["out"], p["mlp"]["out"], gelu(hidden))
            h = h + mlp
            acts.update({f"block{l}.attention": att, f"block{l}.mlp_hidden": hidden,
                         f"block{l}.mlp": mlp, f"block{l}.residual": h})
        z = norm(desc["final_norm"], params["final_norm"], h)
        if self.tied_embeddings:
            g = self.readout_multiplier(hp) * (z @ emb["tokens"].T)
            if self.bias:
                g = g + mult(desc["readout"]["b"], params["readout"]["b"])
        else:
            g = dense(desc["readout"], params["readout"], z)
        acts["logits"] = g
        return g, acts, tuple(logits_per_block)
