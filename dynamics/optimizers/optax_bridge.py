"""Any optax optimizer as a traindyn ``Optimizer``: float keywords swept, others static.

``from_optax(factory, **keywords)`` describes ``factory(**keywords)`` (``optax.lion``,
``optax.adafactor``, ``optax.contrib.muon``, a function of your own that returns an
``optax.GradientTransformation``, ...). Every float keyword of the factory (a number for a
keyword whose default is a float, a float for one whose default is ``None``) is a *swept
value*: it is passed through ``optax.inject_hyperparams``, so it is a traced input of the
compiled program and a sweep over it is one compile. Every other keyword (booleans,
integers that count things such as ``ns_steps``, strings, dtypes, tuples, masks) is
*static*: part of the program, and a static sweep axis
(``td.sweep(spec, nesterov=[False, True])`` compiles twice). The learning rate is called
``lr`` in traindyn, whatever the factory calls it (optax: ``learning_rate``, accepted too).

traindyn's own keywords, around the factory (a keyword the factory takes is the
factory's: ``optax.contrib.schedule_free_adamw(warmup_steps=...)`` keeps its own warmup):

* ``schedule`` and its lengths (``dynamics.optimizers.schedules``): the learning rate of
  step ``t`` is ``lr * s(t)``, fed to the factory's ``learning_rate``; an optax schedule
  given as ``learning_rate`` is used as ``s`` with ``lr = 1``;
* ``clip_norm``: gradient clipping by global norm (``optax.clip_by_global_norm``);
* ``gradient_noise``: the standard deviation ``sigma`` of additive Gaussian noise on every
  gradient coordinate (``dynamics.optimizers.gradient_noise``; added by the training loop,
  which holds the run's key, before everything below);
* ``orthogonal`` (``"none"``, the default, ``"layer"`` or ``"global"``; ``None`` reads
  ``"none"``) and ``orthogonal_rescale``: ⊥Grad (``dynamics.optimizers.orthogonal``);
* ``weight_decay`` with ``weight_decay_coupling``, ``weight_decay_mask``,
  ``weight_decay_scales`` (a decay per leaf) and ``decay_embeddings``
  (``dynamics.optimizers.weight_decay``). A factory with a
  ``weight_decay`` keyword of its own (``optax.adamw``, ``optax.lion``) keeps it, with its
  own ``mask``, unless ``weight_decay_coupling`` is given: then traindyn applies the decay
  and the factory's is set to 0;
* ``family``: ``"sgd"`` or ``"adam"``, which column of the muP tables applies (Yang et
  al. 2022, "Tensor Programs V", Tables 3 and 8, written for SGD and for Adam). traindyn
  counts as Adam-like the optimizers whose updates are normalised entry by entry (the Adam
  variants, Adagrad, RMSProp, and the sign-based Lion and signSGD): ``FAMILIES``, for
  optax's own factories. Any other factory's family is ``None`` (unknown) unless given.

``build`` chains, for the values ``hparams`` of one run::

    clip_by_global_norm -> ⊥Grad -> L2 (g + lambda theta)
      -> factory(learning_rate = lr s(t), swept floats, static keywords)
      -> decoupled decay (- lr s(t) lambda theta)
      -> x c_l (the parametrization's per-leaf learning-rate multipliers)
      -> independent decay (- s(t) lambda theta)

all inside one ``optax.inject_hyperparams``, whose state holds the swept values (the
scheduled ones at their current value). The multipliers scale the step, including a decay
coupled to the learning rate, but not the independent decay.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Mapping

import jax
import optax
import optax.contrib

from dynamics.optimizers import hyperparameters, schedules
from dynamics.optimizers import weight_decay as decay
from dynamics.optimizers.orthogonal import orthogonal_gradient
from dynamics.optimizers.preconditioner import adam_preconditioner, injected_hyperparams

FAMILIES = {
    "sgd": ("sgd", "noisy_sgd"),
    "adam": ("adam", "adamw", "nadam", "nadamw", "adamax", "adamaxw", "amsgrad", "adabelief",
             "adagrad", "radam", "rmsprop", "yogi", "lion", "sign_sgd", "signum"),
}
ORTHOGONAL = ("none", "layer", "global")

# traindyn's keywords (a factory's keyword of the same name takes precedence)
_OWN = ("lr", "learning_rate", "family", "name", "schedule", *schedules.LENGTHS, "clip_norm",
        "gradient_noise",
        "weight_decay", "weight_decay_coupling", "weight_decay_mask", "weight_decay_scales",
        "decay_embeddings", "orthogonal", "orthogonal_rescale")


def public_name(factory) -> str:
    """``optax.lion``, ``optax.contrib.muon``, else ``module.qualname``."""
    name = getattr(factory, "__name__", None)
    for module, prefix in ((optax, "optax"), (optax.contrib, "optax.contrib")):
        if name and getattr(module, name, None) is factory:
            return f"{prefix}.{name}"
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)}"


def known_family(factory) -> str | None:
    for family, names in FAMILIES.items():
        if any(getattr(optax, n, None) is factory for n in names):
            return family
    return None


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _swept(value, default) -> bool:
    """A keyword is swept when its value is a real number and the factory's default is a
    float (or ``None``, and the value a float): integers that count things stay static."""
    if not _is_real(value):
        return False
    if isinstance(default, float):
        return True
    return default is None and not isinstance(value, numbers.Integral)


def _jsonable(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if callable(v):
        return public_name(v)
    return repr(v)


def _hashable(v):
    try:
        hash(v)
        return v
    except TypeError:
        return ("id", id(v))


def _refuse_factory(factory, why: str = ""):
    raise ValueError(
        "factory must be an optax optimizer factory: a function of keywords, among them "
        f"learning_rate, that returns an optax.GradientTransformation (e.g. optax.lion){why}, "
        f"got {factory!r}"
    )


def _scale_by_tree(multipliers) -> optax.GradientTransformation:
    """Multiply each update leaf by its (possibly traced) multiplier."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _keywords_of(factory) -> Mapping[str, inspect.Parameter]:
    """The factory's keywords, after checking that it can be a factory at all."""
    if not callable(factory) or isinstance(factory, type):
        _refuse_factory(factory)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        _refuse_factory(factory, " with an inspectable signature")
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()):
        _refuse_factory(factory, " with named keywords only (no *args, **kwargs)")
    if "learning_rate" not in params:
        _refuse_factory(factory, "; it takes no learning_rate")
    return params


def _split(keywords: dict, params, name: str) -> tuple[dict, dict]:
    """(traindyn's keywords, the factory's): a name the factory takes is the factory's,
    but ``learning_rate``, and ``weight_decay`` when ``weight_decay_coupling`` is given."""
    kw = dict(keywords)
    own = {k: kw.pop(k) for k in list(kw)
           if k in _OWN and (k not in params or k == "learning_rate")}
    if "weight_decay_coupling" in own and "weight_decay" in kw:
        own["weight_decay"] = kw.pop("weight_decay")
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise ValueError(
            f"{unknown[0]!r} is not a keyword of {name}: its keywords are "
            f"{sorted(set(params) - {'learning_rate'})}, and traindyn's are "
            f"{sorted(set(_OWN) - set(params))}"
        )
    missing = [k for k, p in params.items() if k != "learning_rate" and k not in kw
               and p.default is inspect.Parameter.empty]
    if missing:
        raise ValueError(f"{name} needs the keyword {missing[0]!r}")
    return own, kw


def _learning_rate_and_schedule(own: dict, params, name: str):
    """Pop ``lr``/``learning_rate``, ``schedule`` and its lengths from ``own``: (the peak
    learning rate, the shape's name or optax schedule, the given lengths)."""
    lr, learning_rate = own.pop("lr", None), own.pop("learning_rate", None)
    schedule = own.pop("schedule", None)
    if callable(learning_rate):
        if schedule is not None:
            raise ValueError("learning_rate is a schedule and schedule is given: give one")
        schedule, lr = learning_rate, 1.0 if lr is None else lr
    elif learning_rate is not None:
        if lr is not None:
            raise ValueError("give the learning rate once: lr (traindyn's name) or "
                             "learning_rate (optax's), not both")
        lr = learning_rate
    if lr is None:
        lr = params["learning_rate"].default
        if not _is_real(lr):
            raise ValueError(f"lr must be given: {name} has no default learning rate")
    schedule = "constant" if schedule is None else schedule
    lengths = {k: v for k in schedules.LENGTHS if (v := own.pop(k, None)) is not None}
    _check_schedule(schedule, lengths)
    return lr, schedule, lengths


def _check_schedule(schedule, lengths: dict) -> None:
    if callable(schedule):
        if lengths:
            raise ValueError(f"{sorted(lengths)[0]} applies to the built-in schedules "
                             f"{list(schedules.SHAPES)}, not to an optax schedule")
        return
    if schedule not in schedules.SHAPES:
        raise ValueError(f"schedule must be one of {list(schedules.SHAPES)} or an optax "
                         f"schedule (a function of the step), got {schedule!r}")
    for a, b in (("warmup_steps", "warmup_fraction"), ("decay_steps", "decay_fraction")):
        if a in lengths and b in lengths:
            raise ValueError(f"give {a} or {b}, not both")
    warmup = ("warmup_steps", "warmup_fraction")
    used = warmup if schedule in ("constant", "warmup") else schedules.LENGTHS
    for k in lengths:
        if k not in used:
            raise ValueError(f"{k} has no effect on schedule {schedule!r}")


def _weight_decay(own: dict, params, statics: dict, swept: dict, name: str):
    """Pop traindyn's weight-decay keywords from ``own``: (rate, coupling, mask,
    decay_embeddings), the coupling ``None`` without traindyn decay. When traindyn decays,
    a factory's own ``weight_decay`` becomes a static 0."""
    coupling = own.pop("weight_decay_coupling", None)
    wd = own.pop("weight_decay", None)
    given = {k: own.pop(k) for k in ("weight_decay_mask", "weight_decay_scales",
                                     "decay_embeddings") if k in own}
    if coupling is None and wd is None:
        if given:
            raise ValueError("weight_decay_mask and decay_embeddings apply to traindyn's weight "
                             "decay, as does weight_decay_scales: give weight_decay (or "
                             f"{name}'s own mask keyword)")
        return None, None, "auto", None, True
    coupling = coupling or "l2"
    if coupling not in decay.COUPLINGS:
        raise ValueError(f"weight_decay_coupling must be one of {list(decay.COUPLINGS)}, "
                         f"got {coupling!r}")
    if "weight_decay" in params:
        swept.pop("weight_decay", None)
        statics["weight_decay"] = 0.0
    mask = given.get("weight_decay_mask", "auto")
    decay.check_mask(mask)
    scales = given.get("weight_decay_scales")
    decay.check_scales(scales)
    decay_embeddings = given.get("decay_embeddings", True)
    if not isinstance(decay_embeddings, bool):
        raise ValueError(f"decay_embeddings must be a bool, got {decay_embeddings!r}")
    return 0.0 if wd is None else wd, coupling, mask, scales, decay_embeddings


class Optimizer:
    """An optax optimizer with swept hyperparameters, a schedule, clipping, weight decay
    and ⊥Grad (module doc). Immutable; ``Optimizer(factory, **keywords)`` is
    ``from_optax(factory, **keywords)``, and ``Optimizer("sgd", lr=0.1)`` the preset of that
    name (``dynamics.optimizers.presets``; ``Optimizer(name="adam")``, the historical
    spelling, too)."""

    def __init__(self, factory: Any = None, /, **keywords):
        if factory is None:
            factory = keywords.pop("name", "sgd")
        if isinstance(factory, str):
            from dynamics.optimizers.presets import preset

            built = preset(factory, keywords)
            self._set(**vars(built))
            return
        self._setup(factory, keywords)

    # -- construction ------------------------------------------------------------------

    def _setup(self, factory, keywords: dict) -> None:
        params = _keywords_of(factory)
        name = public_name(factory)
        own, kw = _split(keywords, params, name)
        lr, schedule, lengths = _learning_rate_and_schedule(own, params, name)
        statics, swept = {}, {}
        for k, p in params.items():
            if k == "learning_rate":
                continue
            value = kw.get(k, p.default)
            if _swept(value, p.default):
                swept[k] = float(value)
            else:
                statics[k] = value
        wd, coupling, mask, scales, decay_embeddings = _weight_decay(own, params, statics,
                                                                     swept, name)
        orthogonal = own.pop("orthogonal", None) or "none"
        if orthogonal not in ORTHOGONAL:
            raise ValueError(f"orthogonal must be one of {list(ORTHOGONAL)}, got {orthogonal!r}")
        rescale = own.pop("orthogonal_rescale", True)
        if not isinstance(rescale, bool):
            raise ValueError(f"orthogonal_rescale must be a bool, got {rescale!r}")
        family = own.pop("family", None) or known_family(factory)
        if family not in (None, "sgd", "adam"):
            raise ValueError(f"family must be 'sgd' or 'adam' (or None: unknown), got {family!r}")
        self._set(_factory=factory, _arguments=dict(keywords), name=own.pop("name", None) or name,
                  family=family, lr=lr, schedule=schedule, _lengths=lengths, _static=statics,
                  _swept_keywords=swept, clip_norm=own.pop("clip_norm", None),
                  gradient_noise=own.pop("gradient_noise", None), weight_decay=wd,
                  weight_decay_coupling=coupling, weight_decay_mask=mask,
                  weight_decay_scales=scales, decay_embeddings=decay_embeddings,
                  orthogonal=orthogonal, orthogonal_rescale=rescale)
        assert not own, own
        clash = sorted(set(swept) & set(self._own_hparams()))
        if clash:
            raise ValueError(f"{name}'s keyword {clash[0]!r} clashes with traindyn's "
                             "hyperparameter of that name")
        self.check_hparams(self.hparams())
        try:
            tx = factory(learning_rate=lr, **statics, **swept)
        except Exception as e:  # the factory's own validation: name it
            raise ValueError(f"{name} refused its keywords: {e}") from e
        if not isinstance(tx, optax.GradientTransformation):
            _refuse_factory(factory, f"; it returned {type(tx).__name__}")

    def _set(self, **attributes) -> None:
        for k, v in attributes.items():
            object.__setattr__(self, k, v)

    # -- the interface the engine uses -------------------------------------------------

    def hparams(self) -> dict[str, float]:
        """Defaults of every swept value, by name (``lr`` for the learning rate)."""
        own = self._own_hparams()
        return {"lr": own.pop("lr"), **self._swept_keywords, **own}

    def _own_hparams(self) -> dict[str, float]:
        out = {"lr": float(self.lr)}
        if not callable(self.schedule):
            out.update(schedules.default_values(self.schedule, self._lengths))
        if self.clip_norm is not None:
            out["clip_norm"] = float(self.clip_norm)
        if self.gradient_noise is not None:
            out["gradient_noise"] = float(self.gradient_noise)
        if self.weight_decay_coupling is not None:
            out["weight_decay"] = float(self.weight_decay)
        return out

    def check_hparams(self, values: Mapping[str, Any], steps: int | None = None) -> None:
        """Range checks of concrete values (``ValueError`` naming the field); with
        ``steps``, lengths in steps must fit in the run."""
        hyperparameters.check(values, steps)

    def check_steps(self, steps: int) -> None:
        self.check_hparams(self.hparams(), steps)

    def schedule_shape(self, steps: int, hparams: Mapping | None = None) -> Callable:
        """``t -> s(t)`` (peak 1) for the values ``hparams`` (default: the defaults)."""
        values = {**self.hparams(), **(hparams or {})}
        shape = schedules.shape_function(self.schedule, steps, values)
        return shape if shape is not None else (lambda t: 1.0)

    def build(self, hparams: Mapping, steps: int, lr_multipliers=None, roles=None
              ) -> optax.GradientTransformation:
        """The optax transformation for the values ``hparams`` (may be traced), a run of
        ``steps`` steps, per-leaf learning-rate multipliers and layer roles (pytrees like
        the parameters, or ``None``); see the module doc for the chain."""
        values = {k: hparams.get(k, v) for k, v in self.hparams().items()}
        shape = schedules.shape_function(self.schedule, steps, values)
        lr = values["lr"]
        injected = {"learning_rate": lr if shape is None else (lambda count: lr * shape(count))}
        injected.update({k: values[k] for k in self._swept_keywords})
        if self.clip_norm is not None:
            injected["clip_norm"] = values["clip_norm"]
        coupling = self.weight_decay_coupling
        if coupling is not None:
            wd = values["weight_decay"]
            scheduled = coupling == "independent" and shape is not None
            injected["weight_decay"] = (lambda count: wd * shape(count)) if scheduled else wd
        mask = decay.decay_mask(self.weight_decay_mask, roles, self.decay_embeddings)
        factory, statics, swept = self._factory, self._static, self._swept_keywords
        scales = self.weight_decay_scales

        def decayed_weights(rate):
            if scales is None:
                return optax.add_decayed_weights(rate, mask)
            return decay.scaled_decayed_weights(rate, mask, scales)

        def chain(**hp):
            parts = []
            if self.clip_norm is not None:
                parts.append(optax.clip_by_global_norm(hp["clip_norm"]))
            if self.orthogonal != "none":
                parts.append(orthogonal_gradient(self.orthogonal == "layer",
                                                 self.orthogonal_rescale))
            if coupling == "l2":
                parts.append(decayed_weights(hp["weight_decay"]))
            parts.append(factory(learning_rate=hp["learning_rate"], **statics,
                                 **{k: hp[k] for k in swept}))
            if coupling == "decoupled":
                parts.append(decayed_weights(-hp["learning_rate"] * hp["weight_decay"]))
            if lr_multipliers is not None:
                parts.append(_scale_by_tree(lr_multipliers))
            if coupling == "independent":
                parts.append(decayed_weights(-hp["weight_decay"]))
            return optax.chain(*parts)

        chain.__signature__ = inspect.Signature(
            [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in injected])
        return optax.inject_hyperparams(chain)(**injected)

    def preconditioner(self, opt_state):
        """Adam's diagonal preconditioner ``P_t = sqrt(nu_hat_t) + eps`` of ``opt_state``
        (Cohen et al. 2022; ``dynamics.optimizers.preconditioner``), a pytree like the
        parameters; ``None`` for SGD-like optimizers and for states without an Adam
        second moment (Lion, Adafactor, ...)."""
        if self.family != "adam":
            return None
        hp = injected_hyperparams(opt_state)
        if "b2" not in hp or "eps" not in hp:
            return None
        return adam_preconditioner(opt_state, hp["b2"], hp["eps"], hp.get("eps_root", 0.0))

    # -- static keywords -----------------------------------------------------------------

    def static_fields(self) -> dict[str, Any]:
        """The static keywords that may be swept as static axes, with their values: the
        factory's booleans, integers and strings (not its ``None`` defaults, which are
        usually "off" switches of a float, e.g. ``optax.sgd(momentum=None)``), and
        traindyn's (``schedule``, ``orthogonal``, the weight decay's coupling and mask)."""
        out = {k: v for k, v in self._static.items()
               if isinstance(v, (bool, int, str)) and not (
                   k == "weight_decay" and self.weight_decay_coupling is not None)}
        if isinstance(self.schedule, str):
            out["schedule"] = self.schedule
        if self.weight_decay_coupling is not None:
            out["weight_decay_coupling"] = self.weight_decay_coupling
            out["decay_embeddings"] = self.decay_embeddings
            if isinstance(self.weight_decay_mask, str):
                out["weight_decay_mask"] = self.weight_decay_mask
        out["orthogonal"] = self.orthogonal
        out["orthogonal_rescale"] = self.orthogonal_rescale
        return out

    def with_static(self, name: str, value) -> "Optimizer":
        """A copy with static keyword ``name`` set to ``value`` (validated anew)."""
        if name not in self.static_fields():
            raise ValueError(f"{name!r} is not a static field of {self.name}: they are "
                             f"{sorted(self.static_fields())}")
        return Optimizer(self._factory, **{**self._arguments, "name": self.name,
                                           "family": self.family, name: value})

    # -- description ---------------------------------------------------------------------

    def config(self) -> dict:
        """JSON-able: the factory, every keyword, and traindyn's settings."""
        return {
            "name": self.name,
            "factory": public_name(self._factory),
            "family": self.family,
            "lr": self.lr,
            "keywords": _jsonable({**self._static, **self._swept_keywords}),
            "schedule": _jsonable(self.schedule),
            "schedule_lengths": dict(self._lengths),
            "clip_norm": self.clip_norm,
            "gradient_noise": self.gradient_noise,
            "weight_decay": self.weight_decay,
            "weight_decay_coupling": self.weight_decay_coupling,
            "weight_decay_mask": _jsonable(self.weight_decay_mask),
            "weight_decay_scales": _jsonable(self.weight_decay_scales),
            "decay_embeddings": self.decay_embeddings,
            "orthogonal": self.orthogonal,
            "orthogonal_rescale": self.orthogonal_rescale,
        }

    def departures_from_gradient_descent(self, hparams: Mapping | None = None) -> list[str]:
        """What makes this optimizer, at the values ``hparams`` (default: its defaults),
        differ from plain gradient descent ``theta <- theta - lr c_l g`` (empty if
        nothing): for the theories that describe only that."""
        hp = {**self.hparams(), **{k: v for k, v in (hparams or {}).items()
                                   if k in self.hparams()}}
        out = []
        if self._factory is not optax.sgd:
            out.append(f"optimizer {self.name!r} (needs plain gradient descent, optax.sgd)")
        elif hp.get("momentum", 0.0) != 0.0:
            out.append(f"optimizer {self.name!r} with momentum={hp['momentum']} (needs none)")
        if callable(self.schedule) or self.schedule != "constant" or self._lengths:
            out.append(f"schedule {_jsonable(self.schedule)!r} (needs a constant lr)")
        if hp.get("weight_decay", 0.0) != 0.0:
            out.append(f"weight_decay={hp['weight_decay']} (needs 0)")
        if self.clip_norm is not None:
            out.append(f"clip_norm={hp['clip_norm']} (needs no clipping)")
        if hp.get("gradient_noise", 0.0) != 0.0:
            out.append(f"gradient_noise={hp['gradient_noise']} (needs the exact gradient)")
        if self.orthogonal != "none":
            out.append(f"orthogonal={self.orthogonal!r} (needs the plain gradient)")
        return out

    # -- value semantics -------------------------------------------------------------------

    def _key(self):
        items = lambda d: tuple(sorted((k, _hashable(v)) for k, v in d.items()))  # noqa: E731
        return (self._factory, self.name, self.family, self.lr, _hashable(self.schedule),
                items(self._lengths), items(self._static), items(self._swept_keywords),
                self.clip_norm, self.gradient_noise, self.weight_decay,
                self.weight_decay_coupling,
                _hashable(self.weight_decay_mask), _hashable(self.weight_decay_scales),
                self.decay_embeddings, self.orthogonal,
                self.orthogonal_rescale)

    def __eq__(self, other):
        return isinstance(other, Optimizer) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __setattr__(self, name, value):
        raise AttributeError("an Optimizer is immutable: use with_static, or from_optax anew")

    def __repr__(self):
        statics = self.static_fields()
        if self.orthogonal == "none":
            del statics["orthogonal"], statics["orthogonal_rescale"]
        if statics.get("schedule") == "constant":
            del statics["schedule"]
        shown = {**self.hparams(), **statics}
        return f"Optimizer({self.name}, " + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def from_optax(factory, **keywords) -> Optimizer:
    """Any optax optimizer factory, its float keywords swept (module doc)."""
    if isinstance(factory, str):
        _refuse_factory(factory, " (a name is a preset: dynamics.optimizers.sgd, ...)")
    return Optimizer(factory, **keywords)
