r"""muP for any flax model: width dimensions inferred from shapes, scales by role.

``with_mup(model, inputs, base=dict(width=64), readout="lm_head")`` takes a flax model from
``from_linen`` / ``from_nnx`` that has a width field (any int field: ``width``, ``d_model``,
``channels``, several at once) and returns the same model in the maximal-update
parametrization in the form of microsoft/mup (Yang et al. 2022, "Tensor Programs V",
Table 8 for SGD-like and Table 3 for Adam-like optimizers): a model that *is* the user's
at the base width and whose training dynamics stay the same as the width grows.

Width inference (microsoft/mup's ``set_base_shapes(model, base, delta=delta)``). The
parameter shapes are read with ``jax.eval_shape`` of ``init`` (nothing is computed) at the
base fields (``base``) and at a second set (``delta``, by default every base field doubled);
an axis whose size differs between the two is a **width dimension**, and its width ratio
in the model at hand is ``r = n / n_base``. The input ``inputs`` (an array, a
``jax.ShapeDtypeStruct`` or a task, batch axis first) fixes the shapes of a linen model,
which flax infers from its input. Roles, in flax's layout (the last axis of a kernel is
its fan-out, ``Dense``/``Conv``/``Embed``/``DenseGeneral``):

============================  ====================  ====================================
width dimensions              role                  scales (``role_scale("mup", ...)``)
============================  ====================  ====================================
two (matrix-like)             ``hidden``            fan-in: the axes before the second
                                                    width axis, fan-out: the others
one, the last axis            vector-like: ``embedding`` (leaf named ``embedding``),
(vector-like)                 ``norm`` (1-D ``scale``), ``bias`` (named ``bias``, such
                              as attention's ``(heads, head_dim)``, or any other 1-D),
                              ``input`` (the others)
one, not the last axis        ``readout``: must be a parameter of a module named by
                              ``readout`` (a path like ``"Dense_2"``, ``"lm_head"`` or
                              ``"decoder/head"``; one or several)
none                          ``fixed`` (the readout's bias, for instance)
============================  ====================  ====================================

A parameter with more than two width dimensions is refused, as microsoft/mup refuses it;
a readout-like parameter that ``readout`` does not name is refused too, as
``mup.shape.assert_hidden_size_inf`` refuses a ``Linear`` with a width fan-in and a finite
fan-out that is not a ``MuReadout`` (give it as a second readout if it is one).

Scales. For each parameter, :func:`dynamics.parametrization.role_scale` with the
parametrization ``"mup"`` (written there once) gives the initial standard deviation, the
forward multiplier and the learning-rate multipliers for SGD-like and Adam-like families;
with ``r_in``, ``r_out`` the width ratios of the fan-in and the fan-out:

* **init**: the user's initialiser, multiplied by ``init_std_mup / init_std_standard``
  (``MuReadout._rescale_parameters``): ``sqrt(r_in)`` for the readout's kernel (its variance
  becomes the base model's, ``sigma^2 / base_fan_in``), zero with ``zero_readout``, and 1
  for every other parameter (flax's biases and norm gains do not depend on the fan-in,
  so microsoft/mup's ``rescale_linear_bias`` for PyTorch's fan-in-scaled biases has no
  counterpart here). The user's initialisers must be the standard parametrization's (``role_scale("standard",
  ...)``: variance ``1/fan_in`` for weights, as flax's ``Dense`` default, and entries of
  order 1 for embeddings, as PyTorch's ``nn.Embedding``). flax's default ``Embed`` init has
  variance ``1/width``, which shrinks the embedding as the model widens and breaks muP
  (measured: the first LayerNorm's change after Adam steps then grows like
  ``width^0.5``): give ``nn.Embed(..., embedding_init=nn.initializers.normal(1.0))``;
* **forward multiplier**: ``1/r_in`` for the readout's kernel (``MuReadout.forward``), 1
  for every other parameter. It is applied by calling the model with ``multiplier *
  param`` in place of ``param``: a linear layer is linear in its weight, so this is the
  multiplier of microsoft/mup's ``MuReadout`` (which divides the readout's input instead;
  its bias is not multiplied in either form);
* **learning rates** (``lr_multipliers(params, hparams, family)``), SGD: vector-like
  ``r_out``, hidden ``r_out / r_in``, readout ``r_in``, fixed 1 (``MuSGD``); Adam: hidden
  ``1/r_in``, every other role 1 (``MuAdam``).

At the base fields every factor is 1: the model is the user's own (standard
parametrization), and the dynamics of the other widths are tuned by tuning the base. The
base may be one of the widths of a sweep: the width dimensions come from ``delta``, not
from the model at hand. A readout tied to the input embedding (``Embed.attend``;
microsoft/mup's ``MuSharedReadout``) has no parameter of its own to name and is not
supported.

Attention. The muP attention logits are ``q . k / d`` (Yang et al. 2022, Sec. 4 and
Table 3; ``dynamics.parametrization.attention_scale``), not ``1/sqrt(d)``; that scale
lives inside the user's module, out of reach of any multiplier on the parameters, so
**the user's attention must use** ``1/d`` (flax: ``nn.MultiHeadDotProductAttention(...,
attention_fn=...)`` with the query scaled by ``1/sqrt(d)`` once more), as microsoft/mup
asks of its users. Nothing here checks it.

``MuPModel`` follows the model protocol (``dynamics.models.base``); its static fields
(``width`` ...) stay sweep axes: ``td.sweep(spec, width=[64, 256, 1024])`` builds each
width's model and table.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dynamics import parametrization
from dynamics.checks import check_bool, check_int, is_int

__all__ = ["MuP", "MuPModel", "ParamScale", "with_mup"]


def _pairs(name: str, value) -> tuple:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{name} must be a non-empty dict of the model's width fields and "
                         f"their ints (e.g. dict(width=64)), got {value!r}")
    for key, n in value.items():
        check_int(f"{name}[{key!r}]", n)
    return tuple(sorted((str(k), int(n)) for k, n in value.items()))


@dataclasses.dataclass(frozen=True)
class MuP:
    """What muP needs besides the model: the ``base`` fields (``dict(width=64)``: the
    model at these fields is the user's own), the ``readout`` module path(s), whether the
    readout starts at zero, and the ``delta`` fields that tell which axes are width
    dimensions (default: every base field doubled)."""

    base: Any
    readout: Any
    zero_readout: bool = False
    delta: Any = None

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        base = self.base if isinstance(self.base, tuple) else _pairs("base", self.base)
        set_("base", base)
        if self.delta is None:
            delta = tuple((k, 2 * n) for k, n in base)
        else:
            delta = self.delta if isinstance(self.delta, tuple) else _pairs("delta",
                                                                           self.delta)
        if [k for k, _ in delta] != [k for k, _ in base]:
            raise ValueError(f"delta must name the same fields as base {sorted(dict(base))}, "
                             f"got {sorted(dict(delta))}")
        if delta == base:
            raise ValueError(f"delta {dict(delta)} equals base {dict(base)}: the width "
                             "dimensions are those that differ between the two")
        set_("delta", delta)
        readout = (self.readout,) if isinstance(self.readout, str) else self.readout
        if (not isinstance(readout, Sequence) or not readout
                or not all(isinstance(r, str) and r.strip("/") for r in readout)):
            raise ValueError(f"readout must be a module path such as 'Dense_2' or 'lm_head' "
                             f"(or a list of them), got {self.readout!r}")
        set_("readout", tuple(r.strip("/") for r in readout))
        set_("zero_readout", check_bool("zero_readout", self.zero_readout))

    def config(self) -> dict:
        return {"base": dict(self.base), "delta": dict(self.delta),
                "readout": list(self.readout), "zero_readout": self.zero_readout}


@dataclasses.dataclass(frozen=True)
class ParamScale:
    """One parameter's muP description: its ``path`` (``"Dense_0/kernel"``), ``role``,
    ``shape`` and ``base_shape`` (``None`` for an axis that is not a width dimension), the
    fan-in and fan-out with their base sizes (``None``: not a width dimension), and the
    factors of the module doc: ``init_factor`` (on the user's initialiser),
    ``multiplier`` (forward), ``lr_sgd`` and ``lr_adam``."""

    path: str
    role: str
    shape: tuple
    base_shape: tuple
    fan_in: int
    fan_out: int
    base_fan_in: int | None
    base_fan_out: int | None
    init_factor: float
    multiplier: float
    lr_sgd: float
    lr_adam: float

    def lr_multiplier(self, family: str) -> float:
        return self.lr_sgd if parametrization.check_family(family) == "sgd" else self.lr_adam


def _path_string(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                    for k in path)


def _leaves(shapes) -> dict[str, tuple]:
    return {_path_string(p): tuple(a.shape)
            for p, a in jax.tree_util.tree_flatten_with_path(shapes)[0]}


def _named_by(path: str, readouts: tuple) -> bool:
    return any(path == r or path.startswith(r + "/") for r in readouts)


def _prod(values) -> int:
    return int(math.prod(values))


def _fans(shape, base_shape, width_axes):
    """``(fan_in, fan_out, base_fan_in, base_fan_out)`` for ``role_scale``: the fan-out
    axes start at the second width axis of a matrix-like parameter, else they are the
    last axis; a base is ``None`` where no width axis is on that side."""
    ndim = len(shape)
    if ndim == 0:
        return 1, 1, None, None
    split = width_axes[1] if len(width_axes) == 2 else ndim - 1
    sized = lambda axes, s: _prod(s[a] for a in axes)  # noqa: E731
    in_axes, out_axes = range(split), range(split, ndim)
    bases = tuple(base_shape[a] if a in width_axes else shape[a] for a in range(ndim))
    has = lambda axes: any(a in width_axes for a in axes)  # noqa: E731
    return (sized(in_axes, shape), sized(out_axes, shape),
            sized(in_axes, bases) if has(in_axes) else None,
            sized(out_axes, bases) if has(out_axes) else None)


def _role(path: str, shape, width_axes, readouts: tuple, name: str) -> str:
    leaf = path.rsplit("/", 1)[-1]
    named = _named_by(path, readouts)
    if len(width_axes) > 2:
        raise ValueError(f"{name}: parameter {path} of shape {shape} has {len(width_axes)} "
                         f"width dimensions (axes {list(width_axes)}); muP is defined for at "
                         "most two (microsoft/mup refuses more as well)")
    if len(width_axes) == 2:
        role = "hidden"
    elif len(width_axes) == 1 and width_axes[0] == len(shape) - 1:
        if leaf == "embedding":
            role = "embedding"
        elif leaf == "scale" and len(shape) == 1:
            role = "norm"
        elif leaf == "bias" or len(shape) == 1:
            role = "bias"
        else:
            role = "input"
    elif len(width_axes) == 1:
        if not named:
            raise ValueError(
                f"{name}: parameter {path} of shape {shape} has a width fan-in (axis "
                f"{width_axes[0]}) and a fan-out that does not grow with width: it is a "
                f"readout, but readout={list(readouts)} does not name it; name its module "
                "(several readouts may be given)")
        return "readout"
    else:
        role = "fixed"
    if named and role != "fixed":
        raise ValueError(
            f"{name}: readout {list(readouts)} names {path} of shape {shape}, whose fan-out "
            f"grows with width (width axes {list(width_axes)}): a readout maps the width to "
            "a fixed number of outputs")
    return role


def _scale_row(path, role, shape, base_shape, width_axes, zero_readout) -> ParamScale:
    fan_in, fan_out, base_in, base_out = _fans(shape, base_shape, width_axes)
    kw = dict(fan_in=fan_in, fan_out=fan_out, base_fan_in=base_in, base_fan_out=base_out)
    standard = parametrization.role_scale("standard", role, **kw)
    sgd = parametrization.role_scale("mup", role, family="sgd", zero_readout=zero_readout,
                                     **kw)
    adam = parametrization.role_scale("mup", role, family="adam", zero_readout=zero_readout,
                                      **kw)
    # the user's init carries standard's std; 0/0 (norm gains, init_std 0) keeps it
    factor = 1.0 if standard.init_std == 0 else sgd.init_std / standard.init_std
    return ParamScale(path, role, tuple(shape), tuple(base_shape), fan_in, fan_out, base_in,
                      base_out, float(factor), float(sgd.multiplier),
                      float(sgd.lr_multiplier), float(adam.lr_multiplier))


def _input_struct(inputs):
    """``(shape per example, dtype)`` from an array, a ShapeDtypeStruct or a task."""
    if inputs is None:
        return None, None
    if hasattr(inputs, "x_train"):
        inputs = inputs.x_train
    shape, dtype = getattr(inputs, "shape", None), getattr(inputs, "dtype", None)
    if shape is None or dtype is None or len(shape) < 1:
        raise ValueError(f"inputs must be an array, a jax.ShapeDtypeStruct or a task with "
                         f"the batch axis first, got {inputs!r}")
    return tuple(int(n) for n in shape[1:]), np.dtype(dtype).name


@dataclasses.dataclass(frozen=True)
class MuPModel:
    """A flax model (``FlaxModel``) in microsoft/mup's muP; see the module doc. Build it
    with :func:`with_mup`."""

    model: Any
    mup: MuP
    input_shape: tuple | None = None
    input_dtype: str | None = None

    parametrization = "mup"

    def __post_init__(self):
        if getattr(self.model, "kind", None) not in ("flax.linen", "flax.nnx"):
            raise ValueError(f"model must be a flax model from from_linen or from_nnx, got "
                             f"{self.model!r}")
        if self.model.kind == "flax.linen" and self.input_shape is None:
            raise ValueError("inputs are needed for a linen model (its shapes follow its "
                             "input): give an array, a ShapeDtypeStruct or the task")
        static = self.model.static_fields()
        for key, n in self.mup.base:
            if key not in static or not is_int(static[key]):
                ints = sorted(k for k, v in static.items() if is_int(v))
                raise ValueError(f"base names {key!r}, which is not an int field of "
                                 f"{self.name}; its int fields are {ints}")
        self.table()  # every check of the shapes, before anything compiles

    # -- the description ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def output_scale(self):
        return self.model.output_scale

    @property
    def center(self):
        return self.model.center

    @property
    def stochastic(self) -> bool:
        return self.model.stochastic

    def _shapes(self, fields) -> dict[str, tuple]:
        model = self.model
        for key, n in fields:
            model = model.with_static(key, n)
        key = jax.ShapeDtypeStruct((2,), np.uint32)
        if self.input_shape is None:
            init = lambda k: model.init(k, None)  # noqa: E731  nnx: shapes from the fields
            return _leaves(jax.eval_shape(init, key))
        x = jax.ShapeDtypeStruct((1, *self.input_shape), np.dtype(self.input_dtype))
        return _leaves(jax.eval_shape(lambda k, x: model.init(k, x), key, x))

    def table(self) -> dict[str, ParamScale]:
        """Every parameter's :class:`ParamScale`, by path (``"Dense_0/kernel"``)."""
        return _table(self)

    def _build_table(self) -> dict[str, ParamScale]:
        base, delta = self._shapes(self.mup.base), self._shapes(self.mup.delta)
        here = self._shapes(())
        fields = f"base {dict(self.mup.base)} and delta {dict(self.mup.delta)}"
        if not (base.keys() == delta.keys() == here.keys()):
            raise ValueError(f"{self.name}: the parameters differ between {fields} (and the "
                             f"model's {self.model.static_fields()}): muP needs the same "
                             "parameters at every width")
        width_axes = {}
        for path, b in base.items():
            d, n = delta[path], here[path]
            if not len(b) == len(d) == len(n):
                raise ValueError(f"{self.name}: parameter {path} has shapes {b} at base and "
                                 f"{d} at delta: its number of axes changes with width")
            axes = tuple(a for a in range(len(b)) if b[a] != d[a])
            fixed_changed = [a for a in range(len(b)) if a not in axes and n[a] != b[a]]
            if fixed_changed:
                raise ValueError(f"{self.name}: parameter {path} has shape {n}, base {b}, "
                                 f"delta {d}: axes {fixed_changed} are not width dimensions "
                                 "between base and delta but differ in this model")
            width_axes[path] = axes
        if not any(width_axes.values()):
            raise ValueError(f"{self.name}: no parameter changes shape between {fields}: "
                             "those fields set no width, and muP needs width dimensions")
        unmatched = [r for r in self.mup.readout if not any(_named_by(p, (r,)) for p in base)]
        if unmatched:
            modules = sorted({p.rsplit("/", 1)[0] for p in base if "/" in p})
            raise ValueError(f"{self.name}: readout {unmatched} names no parameter; the "
                             f"modules are {modules}")
        table = {}
        for path, n in here.items():
            axes = width_axes[path]
            role = _role(path, n, axes, self.mup.readout, self.name)
            base_shape = tuple(base[path][a] if a in axes else None for a in range(len(n)))
            table[path] = _scale_row(path, role, n, base_shape, axes, self.mup.zero_readout)
        readouts = [p for p, s in table.items() if s.role == "readout"]
        if not readouts:
            raise ValueError(f"{self.name}: readout {list(self.mup.readout)} names no "
                             "parameter with a width fan-in and a fixed fan-out")
        return table

    def _map(self, fn, params):
        table = self.table()

        def leaf(path, p):
            s, shape = table.get(_path_string(path)), tuple(np.shape(p))
            # leading axes (parameters stacked over runs) are allowed
            if s is None or shape[len(shape) - len(s.shape):] != s.shape:
                raise ValueError(f"{self.name}: parameter {_path_string(path)} of shape "
                                 f"{np.shape(p)} is not one of this model's "
                                 f"({sorted(table)} at {self.model.static_fields()})")
            return fn(s, p)

        return jax.tree_util.tree_map_with_path(leaf, params)

    def effective(self, params):
        """``multiplier * param`` for every parameter: the weights the user's module
        sees (a factor 1 leaves the leaf as it is)."""
        return self._map(lambda s, p: p if s.multiplier == 1.0
                         else jnp.asarray(s.multiplier, p.dtype) * p, params)

    def roles(self, params):
        """The parameters' roles for the optimizer's weight-decay mask
        (``dynamics.optimizers.weight_decay``): the table's, but a ``fixed`` parameter
        (no width dimension) is named by what it is: ``bias``, ``norm`` (a 1-D
        ``scale``), ``embedding``, else ``hidden`` (a weight, decayed like one)."""
        def role(s, p):
            if s.role != "fixed":
                return s.role
            leaf = s.path.rsplit("/", 1)[-1]
            if leaf == "scale" and len(s.shape) == 1:
                return "norm"
            if leaf == "bias" or len(s.shape) <= 1:
                return "bias"
            return "embedding" if leaf == "embedding" else "hidden"

        return self._map(role, params)

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"):
        parametrization.check_family(family)
        return self._map(lambda s, p: s.lr_multiplier(family), params)

    # -- the protocol ---------------------------------------------------------------------

    def hparams(self) -> dict[str, float]:
        return self.model.hparams()

    def check_hparams(self, values: Mapping[str, Any]) -> None:
        self.model.check_hparams(values)

    def static_fields(self) -> dict[str, Any]:
        return self.model.static_fields()

    def with_static(self, name: str, value):
        return dataclasses.replace(self, model=self.model.with_static(name, value))

    def config(self) -> dict:
        return {**self.model.config(), "parametrization": "mup", "mup": self.mup.config()}

    def _check_input(self, x):
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: inputs of shape {tuple(x.shape[1:])} per example, "
                             f"but its muP table was built for {self.input_shape}")

    def init_variables(self, key, x, hparams=None):
        self._check_input(x)
        params, state = self.model.init_variables(key, x, hparams)
        params = self._map(lambda s, p: p if s.init_factor == 1.0
                           else jnp.asarray(s.init_factor, p.dtype) * p, params)
        return params, state

    def init(self, key, x, hparams=None):
        return self.init_variables(key, x, hparams)[0]

    def apply(self, params, x, hparams=None, **kw):
        return self.model.apply(self.effective(params), x, hparams, **kw)

    def apply_train(self, params, x, hparams=None, **kw):
        return self.model.apply_train(self.effective(params), x, hparams, **kw)

    def activations(self, params, x, hparams=None, **kw) -> dict:
        return self.model.activations(self.effective(params), x, hparams, **kw)


@functools.lru_cache(maxsize=256)
def _table(model: MuPModel) -> dict[str, ParamScale]:
    return model._build_table()


def with_mup(model, inputs=None, *, base: Mapping[str, int], readout, zero_readout=False,
             delta: Mapping[str, int] | None = None) -> MuPModel:
    """``model`` (``from_linen`` / ``from_nnx``) in microsoft/mup's muP (the module doc).

    ``inputs``: an example input (array, ``jax.ShapeDtypeStruct`` or task; batch axis
    first), needed by linen models; ``base``: the fields at which the model is the user's
    own, e.g. ``dict(width=64)``; ``readout``: the readout module's path (or a list);
    ``zero_readout``: start the readout's kernel at zero; ``delta``: the fields that tell
    the width dimensions (default: the base fields doubled)."""
    shape, dtype = _input_struct(inputs)
    return MuPModel(model, MuP(base, readout, zero_readout, delta), shape, dtype)
