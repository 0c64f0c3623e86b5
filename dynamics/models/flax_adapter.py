"""A user's flax model (linen or nnx) as a traindyn model.

``from_linen(factory, **fields)`` and ``from_nnx(factory, **fields)`` take a factory (a
linen ``Module`` class, a function returning a module, or for nnx a function or class taking
``rngs``) and its keyword fields:

* int, str and bool fields (width, heads, depth, channels, ...) are **static sweep axes**:
  ``td.sweep(spec, width=[64, 256])`` builds the model once per value;
* float fields are **swept values** (traced, one compile) for linen: the module is built
  inside the traced program with the run's value, so a factory that uses the field as a
  number (a multiplier, an init scale) is swept for free. nnx modules keep their attributes
  in a static graph, so their float fields are static axes too.

Non-parameter state and randomness. Variables other than parameters (linen collections
such as ``batch_stats``; nnx ``BatchStat``) are carried in the training state and updated by
every training step; evaluation uses them as they are (running statistics). Dropout draws
its key from the run's key and the step (``dynamics.loop``), so a run is the same alone and
in a sweep. The mode reaches the model as its ``train`` (``training``, ``is_training``) or
``deterministic`` argument for linen (found in the signature of ``__call__``; override with
``train_arg=``, ``None`` for none), and through ``Module.train()`` / ``Module.eval()`` for
nnx.

``apply`` returns the module's outputs as they are (a ``(batch,)`` output becomes
``(batch, 1)``); the output scale and centering are applied by the loop
(``dynamics.models.base``). Parameters are nested dicts (for nnx ``nnx.to_pure_dict``), so
they are plain pytrees for optax, ``vmap`` and ``tree_map``; every learning-rate multiplier
is 1 (a user's model carries no parametrization).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen, nnx

from dynamics.checks import check_bool, check_float, is_real

__all__ = ["FlaxModel", "from_linen", "from_nnx"]

_TRAIN_NAMES = ("train", "training", "is_training")
_TRAIN_ARGS = _TRAIN_NAMES + ("deterministic",)
_DROPPED_COLLECTIONS = ("intermediates",)  # sown values are outputs, not state


def _call_parameters(fn) -> set[str]:
    if inspect.isclass(fn):
        fn = fn.__init__
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


@dataclasses.dataclass(frozen=True, eq=False)
class FlaxModel:
    """A flax model seen through the traindyn model protocol (see the module doc).

    Equal factories with equal fields compare equal, so the sweeps that build the same
    model share their compiled programs."""

    kind: str                                # "flax.linen" or "flax.nnx"
    factory: Callable = dataclasses.field(repr=False)
    fields: tuple = ()                       # sorted (name, value) pairs
    output_scale: float = 1.0
    center: bool = False
    name: str = ""
    train_arg: str | None = "auto"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("output_scale", check_float("output_scale", self.output_scale, 0.0, low_open=True))
        set_("center", check_bool("center", self.center))
        if not callable(self.factory):
            raise ValueError(f"factory must be a flax module, a module class or a function "
                             f"returning one, got {self.factory!r}")
        for key, value in self.fields:
            if not isinstance(value, (bool, int, str, float)) or value is None:
                raise ValueError(f"field {key} must be an int, float, str or bool (a static "
                                 f"axis or a swept value), got {value!r}")
        if not self.name:
            set_("name", getattr(self.factory, "__name__", type(self.factory).__name__))
        if self.kind == "flax.linen":
            set_("train_arg", self._linen_train_arg())
        else:
            set_("_nnx", self._nnx_structure())

    def _key(self):
        return (self.kind, self.factory, self.fields, self.output_scale, self.center,
                self.name, self.train_arg)

    def __eq__(self, other):
        return isinstance(other, FlaxModel) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    # -- fields ---------------------------------------------------------------------

    @property
    def _swept(self) -> tuple[str, ...]:
        if self.kind != "flax.linen":
            return ()
        return tuple(k for k, v in self.fields if isinstance(v, float))

    def hparams(self) -> dict[str, float]:
        out = {"output_scale": self.output_scale}
        out.update({k: v for k, v in self.fields if k in self._swept})
        return out

    def check_hparams(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if not is_real(value):
                raise ValueError(f"{name} must be a real number, got {value!r}")
            if name == "output_scale":
                check_float("output_scale", value, 0.0, low_open=True)

    def static_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.fields if k not in self._swept}

    def with_static(self, name: str, value):
        if name not in self.static_fields():
            raise ValueError(f"{name!r} is not a static field of {self.name}; its static "
                             f"fields are {sorted(self.static_fields())}")
        fields = tuple(sorted({**dict(self.fields), name: value}.items()))
        return dataclasses.replace(self, fields=fields)

    def _kwargs(self, hparams: Mapping | None):
        kw = dict(self.fields)
        if hparams:
            kw.update({k: hparams[k] for k in self._swept if k in hparams})
        return kw

    def config(self) -> dict:
        return {"model": self.kind, "name": self.name, "fields": dict(self.fields),
                "output_scale": self.output_scale, "center": self.center}

    # -- linen ----------------------------------------------------------------------

    def _module(self, hparams=None):
        if isinstance(self.factory, linen.Module):
            return self.factory  # a module instance has no fields of ours
        return self.factory(**self._kwargs(hparams))

    def _linen_train_arg(self):
        module = self._module()
        if not isinstance(module, linen.Module):
            raise ValueError(f"factory must build a flax.linen Module, got "
                             f"{type(module).__name__}")
        if self.train_arg != "auto":
            if self.train_arg is not None and self.train_arg not in _TRAIN_ARGS:
                raise ValueError(f"train_arg must be one of {list(_TRAIN_ARGS)}, 'auto' or "
                                 f"None, got {self.train_arg!r}")
            return self.train_arg
        names = _call_parameters(type(module).__call__)
        return next((n for n in _TRAIN_ARGS if n in names), None)

    def _mode(self, train: bool) -> dict:
        if self.train_arg is None:
            return {}
        if self.train_arg == "deterministic":
            return {"deterministic": not train}
        return {self.train_arg: train}

    # -- nnx ------------------------------------------------------------------------

    def _nnx_make(self, rngs):
        kw = dict(self.fields)
        if "rngs" in _call_parameters(self.factory):
            return self.factory(**kw, rngs=rngs)
        return self.factory(rngs, **kw)

    def _nnx_structure(self):
        """Graph definitions in both modes and the abstract state, from an abstract build
        with a fixed key (so they never depend on a run's key)."""
        model = nnx.eval_shape(lambda: self._nnx_make(nnx.Rngs(0)))
        if not isinstance(model, nnx.Module):
            raise ValueError(f"factory must build a flax.nnx Module, got {type(model).__name__}")
        graphs = {}
        for mode in ("eval", "train"):
            getattr(model, mode)()
            graphs[mode], params, rngs, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)
        return {"graphs": graphs, "params": params, "rngs": rngs, "rest": rest}

    def _nnx_merge(self, params, state, train: bool, key):
        s = self._nnx
        params_state = _copy(s["params"])
        nnx.replace_by_pure_dict(params_state, params)
        rest = _copy(s["rest"])
        if state:
            nnx.replace_by_pure_dict(rest, state)
        rng_key = jax.random.key(0) if key is None else key
        if not jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
            rng_key = jax.random.wrap_key_data(rng_key)
        pure = nnx.to_pure_dict(s["rngs"])
        counter = iter(range(10**6))

        def fresh(leaf):
            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                return jax.random.fold_in(rng_key, next(counter))
            return jnp.zeros(leaf.shape, leaf.dtype)

        rngs = _copy(s["rngs"])
        nnx.replace_by_pure_dict(rngs, jax.tree.map(fresh, pure))
        graph = s["graphs"]["train" if train else "eval"]
        return nnx.merge(graph, params_state, rngs, rest)

    # -- the protocol ---------------------------------------------------------------

    @property
    def stochastic(self) -> bool:
        """Whether training mode differs from evaluation (a mode argument, dropout, batch
        statistics): the loop then gives it a key and its state at every step."""
        if self.kind == "flax.linen":
            return self.train_arg is not None
        s = self._nnx
        return len(s["rngs"]) > 0 or s["graphs"]["train"] != s["graphs"]["eval"]

    def init_variables(self, key, x, hparams=None):
        """``(params, state)``: ``state`` is a dict of the non-parameter collections
        (``None`` when there are none)."""
        if self.kind == "flax.linen":
            # the "params" stream is ``key`` itself, as in ``module.init(key, x)``
            variables = self._module(hparams).init(
                {"params": key, "dropout": jax.random.fold_in(key, 1)}, x,
                **self._mode(False))
            variables = dict(variables)
            params = variables.pop("params", {})
            state = {k: v for k, v in variables.items() if k not in _DROPPED_COLLECTIONS}
            return params, (state or None)
        del x  # nnx modules declare their shapes in the factory
        model = self._nnx_make(nnx.Rngs(key))
        _, params, _, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)
        rest = nnx.to_pure_dict(rest)
        return nnx.to_pure_dict(params), (rest or None)

    def init(self, key, x, hparams=None):
        return self.init_variables(key, x, hparams)[0]

    @staticmethod
    def _shaped(out):
        return out[:, None] if out.ndim == 1 else out

    def apply(self, params, x, hparams=None, *, state=None, train=False, key=None):
        return self._apply(params, x, hparams, state, train, key)[0]

    def apply_train(self, params, x, hparams=None, *, state=None, key=None):
        """Training mode: ``(outputs, new_state)`` (the state after this forward pass)."""
        return self._apply(params, x, hparams, state, True, key)

    def _apply(self, params, x, hparams, state, train, key):
        if self.kind == "flax.linen":
            variables = {"params": params, **(state or {})}
            rngs = None if key is None else {"dropout": key}
            module = self._module(hparams)
            if train and state:
                out, new = module.apply(variables, x, **self._mode(True), rngs=rngs,
                                        mutable=list(state))
                return self._shaped(out), {k: new[k] for k in state}
            return self._shaped(module.apply(variables, x, **self._mode(train), rngs=rngs)), state
        model = self._nnx_merge(params, state, train, key)
        out = self._shaped(model(x))
        if train and state:
            _, _, _, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)
            return out, nnx.to_pure_dict(rest)
        return out, state

    def lr_multipliers(self, params, hparams=None, family="sgd"):
        """1 for every parameter: a user's model carries no parametrization (muP:
        ``dynamics.models.flax_mup.with_mup``)."""
        return jax.tree_util.tree_map(lambda _: 1.0, params)

    # -- the coordinate check ---------------------------------------------------------

    def activations(self, params, x, hparams=None, *, state=None) -> dict:
        """Every submodule's output in forward order, then the raw output ``g`` as
        ``"output"`` (the coordinate check, ``dynamics.observables.CoordinateCheck``).

        linen only: the outputs are those that ``Module.apply(...,
        capture_intermediates=True)`` records, in evaluation mode, keyed by the module's
        path (``"Block_0/Dense_1"``); a module called twice gives ``"path:0"``,
        ``"path:1"``, and one that returns several arrays ``"path[0]"``, ``"path[1]"``.
        A module's entry follows those of its submodules (it returns after them)."""
        if self.kind != "flax.linen":
            raise ValueError(f"activations needs a linen model (capture_intermediates); "
                             f"{self.name} is {self.kind}")
        variables = {"params": params, **(state or {})}
        out, captured = self._module(hparams).apply(
            variables, x, **self._mode(False), capture_intermediates=True,
            mutable=["intermediates"])
        acts = {}

        def walk(tree, prefix):
            for key, value in tree.items():
                if key != "__call__":
                    walk(value, prefix + (key,))
                elif prefix:  # the top module's own output is "output"
                    name = "/".join(prefix)
                    for i, call in enumerate(value):
                        leaves = jax.tree.leaves(call)
                        tag = name if len(value) == 1 else f"{name}:{i}"
                        for j, leaf in enumerate(leaves):
                            acts[tag if len(leaves) == 1 else f"{tag}[{j}]"] = leaf

        walk(captured["intermediates"], ())
        acts["output"] = self._shaped(out)
        return acts


def _copy(state):
    """A copy of an nnx State whose values can be replaced without touching the original."""
    return jax.tree.map(lambda v: v, state)


def _split_options(kwargs):
    options = {k: kwargs.pop(k) for k in ("output_scale", "center", "name") if k in kwargs}
    fields = tuple(sorted(kwargs.items()))
    return options, fields


def from_linen(factory, *, train_arg: str | None = "auto", **fields) -> FlaxModel:
    """A linen model: ``factory`` is a Module class, a function returning a Module, or a
    Module instance (then without fields). ``output_scale``, ``center`` and ``name`` are the
    adapter's options; every other keyword is a field of the factory (see the module doc)."""
    options, fields = _split_options(fields)
    if isinstance(factory, linen.Module) and fields:
        raise ValueError(f"fields {sorted(dict(fields))} need a factory (the module class or "
                         "a function), not a module instance")
    if isinstance(factory, linen.Module) and "name" not in options:
        options["name"] = type(factory).__name__
    return FlaxModel("flax.linen", factory, fields, train_arg=train_arg, **options)


def from_nnx(factory, **fields) -> FlaxModel:
    """An nnx model: ``factory(rngs=..., **fields)`` (or ``factory(rngs, **fields)``) returns
    an ``nnx.Module``. ``output_scale``, ``center`` and ``name`` are the adapter's options;
    every other keyword is a field of the factory, a static sweep axis."""
    options, fields = _split_options(fields)
    return FlaxModel("flax.nnx", factory, fields, **options)
