"""Optimizers and schedules against optax and closed forms; swept values are traced."""

from __future__ import annotations

import contextlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import dynamics as td
from dynamics import losses


@contextlib.contextmanager
def count_compiles():
    """Backend compiles (XLA programs built) inside the block: ``counter[0]``."""
    counter = [0]

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            counter[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def shape_values(opt, steps, ts):
    shape = opt.schedule_shape(steps)
    return np.array([float(shape(t)) for t in ts])


def test_schedule_closed_forms():
    T, W = 100, 10
    # float32 evaluation of simple expressions: a few ulps
    tol = dict(rtol=1e-6, atol=1e-7)
    warm = td.Optimizer(schedule="warmup", warmup_steps=W)
    np.testing.assert_allclose(shape_values(warm, T, [0, 4, 9, 50]), [0.1, 0.5, 1.0, 1.0], **tol)
    lin = td.Optimizer(schedule="linear_decay", warmup_steps=W, final_lr_fraction=0.1)
    np.testing.assert_allclose(shape_values(lin, T, [0, 10, 55, 100]),
                               [0.1, 1.0, 1 - 0.9 * 0.5, 0.1], **tol)
    cos = td.Optimizer(schedule="cosine", final_lr_fraction=0.0)
    np.testing.assert_allclose(shape_values(cos, T, [0, 50, 100]), [1.0, 0.5, 0.0], **tol)
    wsd = td.Optimizer(schedule="wsd", warmup_steps=W, decay_steps=20, final_lr_fraction=0.0)
    np.testing.assert_allclose(shape_values(wsd, T, [5, 50, 80, 90, 100]),
                               [0.6, 1.0, 1.0, 0.5, 0.0], **tol)
    # the same shapes with lengths as fractions of the run
    wsd_f = td.Optimizer(schedule="wsd", warmup_fraction=0.1, decay_fraction=0.2)
    np.testing.assert_allclose(shape_values(wsd_f, T, [5, 50, 80, 90, 100]),
                               [0.6, 1.0, 1.0, 0.5, 0.0], **tol)
    # a decay length shorter than the rest of the run: cosine reaches f at W + D, then holds
    cos_d = td.Optimizer(schedule="cosine", warmup_steps=W, decay_steps=40,
                         final_lr_fraction=0.2)
    np.testing.assert_allclose(shape_values(cos_d, T, [30, 50, 90]),
                               [0.2 + 0.8 * 0.5, 0.2, 0.2], **tol)


@pytest.mark.parametrize(
    "opt, reference",
    [
        (td.optimizers.sgd(0.1), optax.sgd(0.1)),
        (td.optimizers.momentum(0.1, momentum=0.8), optax.sgd(0.1, momentum=0.8)),
        (td.optimizers.momentum(0.1, momentum=0.8, nesterov=True),
         optax.sgd(0.1, momentum=0.8, nesterov=True)),
        (td.optimizers.adam(0.01, b1=0.8, b2=0.99), optax.adam(0.01, b1=0.8, b2=0.99)),
        # optax decays every leaf: the presets do with weight_decay_mask="all"
        (td.optimizers.adamw(0.01, weight_decay=0.1, weight_decay_mask="all"),
         optax.adamw(0.01, weight_decay=0.1)),
        (td.optimizers.sgd(0.1, weight_decay=0.01, weight_decay_mask="all"),
         optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.1))),
        (td.optimizers.from_optax(optax.lion, lr=0.01, b2=0.9), optax.lion(0.01, b2=0.9)),
        (td.optimizers.from_optax(optax.sgd, learning_rate=optax.cosine_decay_schedule(0.1, 3)),
         optax.sgd(optax.cosine_decay_schedule(0.1, 3))),
    ],
    ids=["sgd", "momentum", "nesterov", "adam", "adamw", "sgd_wd", "lion", "optax_schedule"],
)
def test_three_steps_match_optax(opt, reference):
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.3])}
    grads = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)), params) for k in range(3)]
    tx = opt.build(opt.hparams(), steps=3)
    ours, theirs = params, params
    s1, s2 = tx.init(params), reference.init(params)
    for g in grads:
        u1, s1 = tx.update(g, s1, ours)
        u2, s2 = reference.update(g, s2, theirs)
        ours, theirs = optax.apply_updates(ours, u1), optax.apply_updates(theirs, u2)
    # same float32 operations up to association and fusion order: a few ulps of the O(1)
    # parameters (ulp(2) = 2.4e-7), absolute since an entry may cancel towards 0
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_hyperparameters_are_traced_not_baked_in():
    opt = td.optimizers.momentum(0.1, momentum=0.9)
    params = {"w": jnp.ones(3)}
    grad = {"w": jnp.array([1.0, 2.0, 3.0])}

    @jax.jit
    def one_step(lr, mom):
        tx = opt.build({"lr": lr, "momentum": mom, "weight_decay": 0.0}, steps=1)
        updates, state = tx.update(grad, tx.init(params), params)
        return updates["w"], state.hyperparams["learning_rate"]

    u, lr_in_state = one_step(0.5, 0.0)
    np.testing.assert_allclose(u, -0.5 * grad["w"], rtol=1e-7)  # one float32 multiply
    assert float(lr_in_state) == 0.5
    assert one_step._cache_size() == 1
    one_step(0.25, 0.5)
    assert one_step._cache_size() == 1  # new values, same program


def test_per_layer_multipliers_scale_updates():
    opt = td.optimizers.sgd(0.1)
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    grad = {"a": jnp.ones(2), "b": jnp.ones(2)}
    tx = opt.build(opt.hparams(), steps=1, lr_multipliers={"a": 1.0, "b": 4.0})
    updates, _ = tx.update(grad, tx.init(params), params)
    np.testing.assert_allclose(updates["a"], -0.1)
    np.testing.assert_allclose(updates["b"], -0.4)


def test_schedule_enters_the_training_loop():
    """Cosine to zero over 4 steps: step 0 is a full step (shape(0) = 1), the later ones
    are shorter, so the first log point after training equals the constant-lr run and
    the last one lags behind it."""
    task = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8, seed=0)
    model = td.MLP(width=8, out_dim=1)
    cosine = td.run(td.Spec(model, task, td.Optimizer("sgd", lr=0.1, schedule="cosine"),
                            steps=4, log_every=1), seed=0).train_loss.values
    constant = td.run(td.Spec(model, task, td.optimizers.sgd(0.1), steps=4, log_every=1),
                      seed=0).train_loss.values
    # the same first step: float32 rounding only
    assert cosine[1] == pytest.approx(constant[1], rel=1e-6)
    # shorter steps make less progress (by far more than rounding) while the loss descends
    assert cosine[4] > constant[4] * (1 + 1e-3) and constant[4] < constant[0]


# -- any optax optimizer in a sweep equals a hand-written optax loop ----------------------


@pytest.fixture(scope="module")
def small_problem():
    task = td.tasks.teacher_student_linear(dim=5, n_train=12, n_test=4, out_dim=2, seed=1)
    # standard: every learning-rate multiplier is 1, as in a loop written with optax alone
    model = td.MLP(width=6, depth=1, out_dim=2, activation="tanh", parametrization="standard")
    return model, task


def handwritten_loop(spec, tx, seeds, steps):
    """The training a user writes with optax alone: a jitted full-batch MSE step, ``steps``
    updates from each run's initial parameters; per seed, the final parameters and the
    loss before each update and after the last."""
    x, y = jnp.asarray(spec.task.x_train), jnp.asarray(spec.task.y_train)
    hp = spec.hparams()

    def loss(p):
        return losses.mse(spec.model.apply(p, x, hp), y)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    out = []
    for seed in seeds:
        params = td.init_params(spec, seed=seed)
        state, curve = tx.init(params), []
        for _ in range(steps):
            params, state, value = step(params, state)
            curve.append(float(value))
        out.append((params, curve + [float(loss(params))]))
    return out


@pytest.mark.parametrize(
    "factory, keywords, reference_keywords",
    [
        (optax.lion, {}, {}),
        # a static int keyword of the factory: factor the 5x6 and 6x2 second moments.
        # adafactor raises (t + 1) in float32 to -decay_rate: a Python float keeps that
        # power float32, a swept (float64) value makes it float64, as np.float64 does here
        (optax.adafactor, {"min_dim_size_to_factor": 2},
         {"min_dim_size_to_factor": 2, "decay_rate": np.float64(0.8)}),
        (optax.contrib.muon, {}, {}),
    ],
    ids=["lion", "adafactor", "contrib.muon"],
)
def test_sweep_matches_a_handwritten_optax_loop(small_problem, factory, keywords,
                                                reference_keywords):
    model, task = small_problem
    steps, lrs, seeds = 6, [0.003, 0.01], [0, 1]
    opt = td.optimizers.from_optax(factory, lr=lrs[0], **keywords)
    spec = td.Spec(model, task, opt, steps=steps, log_every=1, observables=("loss",),
                   dtype="float64", strategy="vmap")
    ds, states = td.sweep(spec, seed=seeds, lr=lrs, return_state=True)
    final = states[()].params
    with jax.enable_x64(True):
        for j, lr in enumerate(lrs):
            runs = handwritten_loop(spec, factory(lr, **reference_keywords), seeds, steps)
            for i, (params, curve) in enumerate(runs):
                # float64 on both sides, the same operations up to batching (vmap) and
                # fusion order: ~1e-16 per operation. Adaptive updates divide by the
                # gradient's size, so a small gradient entry that is a cancellation carries
                # its rounding into an O(lr) step (measured: up to 3e-11 of a leaf's largest
                # entry after 6 steps); 1e-10 of the leaf's scale still tells apart any
                # other optimizer, learning rate or seed (they differ at O(lr) = 1e-3)
                np.testing.assert_allclose(ds.train_loss.isel(seed=i, lr=j).values, curve,
                                           rtol=1e-10)
                for ours, theirs in zip(jax.tree.leaves(final), jax.tree.leaves(params)):
                    scale = np.abs(theirs).max()
                    np.testing.assert_allclose(np.asarray(ours)[i, j], theirs, rtol=0,
                                               atol=1e-10 * scale)


def test_warmup_by_peak_lr_sweep_compiles_once_and_matches_the_schedule(small_problem):
    model, task = small_problem
    steps = 8

    def spec_for(root_seed):
        opt = td.optimizers.sgd(0.1, schedule="warmup", warmup_fraction=0.5)
        return td.Spec(model, task, opt, steps=steps, log_every=2, observables=("loss",),
                       dtype="float64", strategy="vmap", root_seed=root_seed)

    # warm the eager caches with four runs, then compare two sweeps of four runs each:
    # one value each (seeds 0..3) against four (warmup fraction x peak lr)
    td.sweep(spec_for(1), seed=range(4))
    with count_compiles() as one_value:
        td.sweep(spec_for(2), seed=range(4))
    with count_compiles() as four_values:
        ds = td.sweep(spec_for(3), seed=[0], warmup_fraction=[0.25, 0.75], lr=[0.05, 0.2])
    assert one_value[0] >= 1  # the sweep's program was built ...
    assert four_values[0] == one_value[0]  # ... and once only for all four values

    spec = spec_for(3)
    with jax.enable_x64(True):
        for fraction in (0.25, 0.75):
            for lr in (0.05, 0.2):
                # w(t) = min(1, (t + 1) / W), W = fraction * steps, written out by hand
                def schedule(t, lr=lr, fraction=fraction):
                    return lr * jnp.minimum(1.0, (t + 1.0) / (fraction * steps))

                [(_, curve)] = handwritten_loop(spec, optax.sgd(schedule), [0], steps)
                # float64, 8 steps: rounding far below 1e-10
                np.testing.assert_allclose(
                    ds.train_loss.sel(warmup_fraction=fraction, lr=lr).isel(seed=0).values,
                    curve[::2],
                    rtol=1e-10)


def test_static_keyword_is_a_static_axis(small_problem):
    model, task = small_problem
    spec = td.Spec(model, task, td.optimizers.momentum(0.05, momentum=0.9), steps=4,
                   log_every=2, observables=("loss",))
    assert spec.static_fields()["nesterov"] == "optimizer"
    ds = td.sweep(spec, seed=[0], nesterov=[False, True])
    assert ds.train_loss.dims == ("seed", "nesterov", "step")
    for nesterov in (False, True):
        alone = td.run(td.Spec(model, task, td.optimizers.momentum(0.05, nesterov=nesterov),
                               steps=4, log_every=2, observables=("loss",)), seed=0)
        # each value runs its own program, the one of the unswept spec: float32 rounding
        np.testing.assert_allclose(ds.train_loss.sel(nesterov=nesterov).values[0],
                                   alone.train_loss.values, rtol=1e-6)
    # nesterov changes the trajectory by far more than rounding
    a, b = ds.train_loss.isel(step=-1).values[0]
    assert abs(a - b) > 1e-4 * abs(a)


# -- clipping, masks, weight decay, ⊥Grad against direct formulas -------------------------


def test_clipping_by_global_norm_with_a_swept_threshold():
    opt = td.optimizers.sgd(0.1, clip_norm=1.0)
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    grad = {"a": jnp.array([3.0, 0.0, 0.0]), "b": jnp.array([[0.0, 4.0], [0.0, 0.0]])}  # |g| = 5

    @jax.jit
    def step(clip_norm):
        tx = opt.build({**opt.hparams(), "clip_norm": clip_norm}, steps=1)
        return tx.update(grad, tx.init(params), params)[0]

    for threshold in (1.0, 2.5, 10.0):
        updates = step(threshold)
        for name in grad:
            # g min(1, c / |g|): a few float32 operations on O(1) numbers
            np.testing.assert_allclose(updates[name], -0.1 * grad[name] * min(1.0, threshold / 5),
                                       rtol=1e-6, atol=1e-7)
    assert step._cache_size() == 1  # the threshold is a traced value


PARAMS = {"emb": jnp.full((3, 2), 2.0), "w": jnp.full((2, 2), 3.0), "b": jnp.full(2, 5.0),
          "ln": jnp.full(2, 7.0), "out": jnp.full((2, 1), 11.0)}
ROLES = {"emb": "embedding", "w": "hidden", "b": "bias", "ln": "norm", "out": "readout"}


@pytest.mark.parametrize(
    "settings, roles, decayed",
    [
        ({}, ROLES, {"emb", "w", "out"}),  # no decay of biases and norm gains
        ({"decay_embeddings": False}, ROLES, {"w", "out"}),
        ({}, None, {"emb", "w", "out"}),  # no roles: the leaves with ndim >= 2
        ({"weight_decay_mask": "all"}, ROLES, set(ROLES)),
        ({"weight_decay_mask": lambda p: {k: k == "b" for k in p}}, ROLES, {"b"}),
        ({"weight_decay_mask": {k: k == "ln" for k in PARAMS}}, None, {"ln"}),
    ],
    ids=["roles", "no_embeddings", "no_roles", "all", "callable", "pytree"],
)
def test_decay_mask(settings, roles, decayed):
    opt = td.optimizers.sgd(0.5, weight_decay=0.1, **settings)
    tx = opt.build(opt.hparams(), steps=1, roles=roles)
    zero = jax.tree.map(jnp.zeros_like, PARAMS)
    updates, _ = tx.update(zero, tx.init(PARAMS), PARAMS)
    for name, theta in PARAMS.items():
        # a zero gradient: the update is the decay alone, -lr lambda theta, or nothing
        expected = -0.5 * 0.1 * theta if name in decayed else jnp.zeros_like(theta)
        np.testing.assert_allclose(updates[name], expected, rtol=1e-6)


def test_unknown_role_is_refused():
    opt = td.optimizers.sgd(0.5, weight_decay=0.1)
    with pytest.raises(ValueError, match=r"roles must be among .*'bias'.*got 'gain'"):
        opt.build(opt.hparams(), steps=1, roles={**ROLES, "ln": "gain"})


def numpy_adam_run(coupling, lr, wd, b1, b2, eps, steps, total, mult, decayed):
    """Adam with weight decay written out (module doc of dynamics.optimizers.weight_decay),
    a cosine schedule s(t) over ``total`` steps, gradient g = sin((t + 1) theta)."""
    theta = {k: np.asarray(v, np.float64) for k, v in PARAMS.items()}
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    for t in range(steps):
        s = 0.5 * (1 + np.cos(np.pi * t / total))
        for k in theta:
            lam = wd if k in decayed else 0.0
            g = np.sin((t + 1) * theta[k]) + (lam * theta[k] if coupling == "l2" else 0.0)
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g**2
            direction = (m[k] / (1 - b1 ** (t + 1))) / (np.sqrt(v[k] / (1 - b2 ** (t + 1))) + eps)
            step = -lr * s * direction
            if coupling == "decoupled":
                step = step - lr * s * lam * theta[k]
            step = mult[k] * step
            if coupling == "independent":
                step = step - s * lam * theta[k]
            theta[k] = theta[k] + step
    return theta


@pytest.mark.parametrize("coupling", ["l2", "decoupled", "independent"])
def test_weight_decay_couplings_against_their_formulas(coupling):
    lr, wd, b1, b2, eps, total = 0.05, 0.2, 0.8, 0.9, 1e-8, 4
    mult = {"emb": 1.0, "w": 2.0, "b": 0.5, "ln": 1.0, "out": 0.25}
    opt = td.optimizers.adam(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd,
                             weight_decay_coupling=coupling, schedule="cosine")
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), PARAMS)
        tx = opt.build(opt.hparams(), steps=total, lr_multipliers=mult, roles=ROLES)
        state = tx.init(params)
        for t in range(3):
            grads = jax.tree.map(lambda p, t=t: jnp.sin((t + 1) * p), params)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        expected = numpy_adam_run(coupling, lr, wd, b1, b2, eps, 3, total, mult,
                                  decayed={"emb", "w", "out"})
        for k in PARAMS:
            # float64 on both sides, a few dozen operations: 1e-12 is ~1e4 ulps of margin
            np.testing.assert_allclose(params[k], expected[k], rtol=1e-12)
    # and the three couplings are different dynamics (by far more than the tolerance)
    others = [numpy_adam_run(c, lr, wd, b1, b2, eps, 3, total, mult, {"emb", "w", "out"})
              for c in ("l2", "decoupled", "independent") if c != coupling]
    for other in others:
        assert np.abs(other["w"] - expected["w"]).max() > 1e-3


def orthogonal_formula(grads, params, per_layer, rescale):
    """g - (theta . g)/(theta . theta) theta per leaf or for the whole vector, in float64,
    with the authors' 1e-30 guards; rescaled to |g| if asked."""
    g = {k: np.asarray(v, np.float64) for k, v in grads.items()}
    th = {k: np.asarray(v, np.float64) for k, v in params.items()}
    groups = [[k] for k in g] if per_layer else [list(g)]
    out = {}
    for keys in groups:
        dot = sum(np.vdot(th[k], g[k]) for k in keys)
        norm2 = sum(np.vdot(th[k], th[k]) for k in keys)
        perp = {k: g[k] - dot / (norm2 + 1e-30) * th[k] for k in keys}
        if rescale:
            before = np.sqrt(sum(np.vdot(g[k], g[k]) for k in keys))
            after = np.sqrt(sum(np.vdot(perp[k], perp[k]) for k in keys))
            perp = {k: p * before / (after + 1e-30) for k, p in perp.items()}
        out.update(perp)
    return out


@pytest.mark.parametrize("per_layer", [True, False], ids=["per_layer", "global"])
@pytest.mark.parametrize("rescale", [True, False], ids=["rescaled", "projected"])
def test_orthogonal_gradient_against_its_formula(small_problem, per_layer, rescale):
    model, task = small_problem
    spec = td.Spec(model, task, td.optimizers.sgd(0.1), steps=1, log_every=1)
    params = td.init_params(spec, seed=0)
    params = jax.tree.map(lambda p: p + 0.3, params)  # no leaf at zero (biases start there)
    x, y = jnp.asarray(task.x_train), jnp.asarray(task.y_train)
    grads = jax.grad(lambda p: losses.mse(model.apply(p, x, spec.hparams()), y))(params)
    flat = lambda tree: {str(i): leaf for i, leaf in enumerate(jax.tree.leaves(tree))}  # noqa: E731
    mode = "layer" if per_layer else "global"
    opt = td.optimizers.sgd(0.1, orthogonal=mode, orthogonal_rescale=rescale)
    tx = opt.build(opt.hparams(), steps=1)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected = orthogonal_formula(flat(grads), flat(params), per_layer, rescale)
    u, th = flat(updates), flat(params)
    for k in u:
        # float32 projection of O(1) vectors of <= 36 entries: float32 rounding (~1e-7)
        np.testing.assert_allclose(u[k], -0.1 * expected[k], rtol=1e-5, atol=1e-7)
    groups = [[k] for k in u] if per_layer else [list(u)]
    for keys in groups:
        dot = sum(np.vdot(np.float64(th[k]), np.float64(u[k])) for k in keys)
        norms = np.sqrt(sum(np.vdot(th[k], th[k]) for k in keys)
                        * sum(np.vdot(u[k], u[k]) for k in keys))
        assert abs(dot) <= 1e-6 * norms  # orthogonal to the weights, to float32 rounding
    # it composes with any optimizer: Adam steps on the projected gradient
    adam = td.optimizers.adam(0.01, orthogonal=mode, orthogonal_rescale=rescale)
    tx = adam.build(adam.hparams(), steps=1)
    ours, _ = tx.update(grads, tx.init(params), params)
    projected = jax.tree.unflatten(jax.tree.structure(grads),
                                   [jnp.asarray(expected[k], jnp.float32) for k in expected])
    ref = optax.adam(0.01)
    theirs, _ = ref.update(projected, ref.init(params), params)
    # Adam's first step is lr g / (|g| + eps) entrywise: float32 rounding of O(lr) numbers
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


# -- the preconditioner of Adam-like optimizers ---------------------------------------------


def test_adam_preconditioner_against_the_optax_state():
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-3  # eps large enough to matter
    opt = td.optimizers.adam(lr, b1=b1, b2=b2, eps=eps)
    reference = optax.adam(lr, b1=b1, b2=b2, eps=eps)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), PARAMS)
        tx = opt.build(opt.hparams(), steps=3)
        state, ref_state = tx.init(params), reference.init(params)
        for leaf in jax.tree.leaves(opt.preconditioner(state)):
            np.testing.assert_allclose(leaf, eps, rtol=1e-15)  # P_0: no second moment yet
        for t in range(1, 4):
            grads = jax.tree.map(lambda p, t=t: jnp.sin(t * p) * 10.0 ** (t - 2), params)
            updates, state = tx.update(grads, state, params)
            ref_updates, ref_state = reference.update(grads, ref_state, params)
            params = optax.apply_updates(params, updates)
            adam_state = ref_state[0]
            P = opt.preconditioner(state)
            for k in PARAMS:
                expected = np.sqrt(adam_state.nu[k] / (1 - b2**t)) + eps
                # float64, a handful of operations
                np.testing.assert_allclose(P[k], expected, rtol=1e-13)
                # Cohen et al.'s definition: the update is -lr P^{-1} m_hat
                m_hat = adam_state.mu[k] / (1 - b1**t)
                np.testing.assert_allclose(updates[k], -lr * m_hat / P[k], rtol=1e-12)
                np.testing.assert_allclose(updates[k], ref_updates[k], rtol=1e-12)
    # SGD-like optimizers and states without Adam's second moment have none
    params = {"w": jnp.ones((2, 2))}
    for other in (td.optimizers.momentum(0.1), td.optimizers.from_optax(optax.lion, lr=1e-3)):
        assert other.preconditioner(other.build(other.hparams(), 1).init(params)) is None


# -- construction: families, statics, configuration, bad input ------------------------------


def test_families_and_their_refusal_when_unknown():
    task = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8, seed=0)
    mup = td.MLP(width=8, out_dim=1, parametrization="mup")
    lion = td.optimizers.from_optax(optax.lion, lr=1e-3)
    adafactor = td.optimizers.from_optax(optax.adafactor, lr=1e-3)
    assert lion.family == "adam" and adafactor.family is None
    assert td.optimizers.momentum(0.1).family == "sgd"
    td.Spec(mup, task, td.optimizers.from_optax(optax.sgd, lr=0.1, momentum=0.5))  # SGD-like
    td.Spec(mup, task, lion)  # Adam-like: the Adam column of the tables
    with pytest.raises(ValueError, match=r"'optax.adafactor' with parametrization='mup': its "
                                         r"family is unknown \(family=None\).*declare it"):
        td.Spec(mup, task, adafactor)
    declared = td.optimizers.from_optax(optax.adafactor, lr=1e-3, family="sgd")
    td.Spec(mup, task, declared)  # the user's word is taken
    # standard's multipliers are 1 for every family: no family needed
    td.Spec(td.MLP(width=8, out_dim=1, parametrization="standard"), task, adafactor)


def test_static_fields_config_and_with_static():
    opt = td.optimizers.from_optax(optax.contrib.muon, lr=0.02, ns_steps=3, schedule="cosine",
                                   warmup_fraction=0.1)
    statics = opt.static_fields()
    assert statics["ns_steps"] == 3 and statics["nesterov"] is True
    assert statics["schedule"] == "cosine" and "lr" not in statics and "beta" not in statics
    assert set(opt.hparams()) >= {"lr", "beta", "eps", "warmup_fraction", "final_lr_fraction"}
    config = json.loads(json.dumps(opt.config()))  # JSON as it is
    assert config["factory"] == "optax.contrib.muon" and config["keywords"]["ns_steps"] == 3
    assert config["keywords"]["beta"] == 0.95 and config["schedule_lengths"] == {
        "warmup_fraction": 0.1}
    five = opt.with_static("ns_steps", 5)
    assert five.static_fields()["ns_steps"] == 5 and five != opt and five.hparams() == opt.hparams()
    assert opt.with_static("ns_steps", 3) == opt and hash(opt.with_static("ns_steps", 3)) == hash(opt)
    with pytest.raises(ValueError, match=r"'beta' is not a static field of optax.contrib.muon"):
        opt.with_static("beta", 0.9)
    # ⊥Grad on and off is a static axis with string values ("none" reads well as a coordinate)
    sgd = td.optimizers.sgd(0.1)
    assert sgd.static_fields()["orthogonal"] == "none"
    assert sgd.with_static("orthogonal", "layer") == td.optimizers.sgd(0.1, orthogonal="layer")
    lion = td.optimizers.from_optax(optax.lion, lr=1e-3, weight_decay_coupling="independent",
                                    weight_decay=0.1)
    # traindyn's decay replaces lion's own, which is set to 0 (static)
    assert lion.hparams()["weight_decay"] == 0.1 and lion.config()["keywords"]["weight_decay"] == 0.0
    assert "weight_decay" not in lion.static_fields()


def test_historical_constructor_builds_the_presets():
    assert td.Optimizer() == td.optimizers.sgd()
    assert td.Optimizer("momentum", lr=0.2) == td.optimizers.momentum(0.2)
    assert td.Optimizer(name="adam", lr=0.01) == td.optimizers.adam(0.01)
    assert td.Optimizer(optax.lion, lr=0.01) == td.optimizers.from_optax(optax.lion, lr=0.01)
    assert td.optimizers.adam(0.01) != td.optimizers.adamw(0.01)


def test_departures_from_gradient_descent():
    def departures(opt):
        return " ".join(opt.departures_from_gradient_descent())

    assert departures(td.optimizers.sgd(0.1)) == ""
    assert departures(td.optimizers.from_optax(optax.sgd, lr=0.1, momentum=0.0)) == ""
    assert "momentum=0.9" in departures(td.optimizers.momentum(0.1))
    assert "'adam'" in departures(td.optimizers.adam())
    assert "clip_norm" in departures(td.optimizers.sgd(0.1, clip_norm=1.0))
    assert "orthogonal" in departures(td.optimizers.sgd(0.1, orthogonal="layer"))
    assert "schedule" in departures(td.optimizers.sgd(0.1, schedule="cosine"))
    assert "weight_decay" in departures(td.optimizers.sgd(0.1, weight_decay=0.1))
    from kernels.predict import check_spec

    task = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8, seed=0)
    clipped = td.Spec(td.MLP(width=8, out_dim=1), task, td.optimizers.sgd(0.1, clip_norm=1.0))
    with pytest.raises(ValueError, match=r"kernel predictions describe .* clip_norm=1.0"):
        check_spec(clipped)


def not_a_transformation(learning_rate):
    return learning_rate


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: td.optimizers.from_optax("adam"),
         r"factory must be an optax optimizer factory.*got 'adam'"),
        (lambda: td.optimizers.from_optax(not_a_transformation, lr=0.1),
         r"factory must be an optax optimizer factory.*it returned float"),
        (lambda: td.optimizers.from_optax(optax.scale_by_adam),
         r"factory must be .*it takes no learning_rate"),
        (lambda: td.optimizers.from_optax(optax.lion, lr=1e-3, momentum=0.9),
         r"'momentum' is not a keyword of optax.lion: its keywords are \['b1', 'b2'"),
        (lambda: td.optimizers.from_optax(optax.lion, lr=1e-3, clip_norm=-1.0),
         r"clip_norm must be > 0, got -1.0"),
        (lambda: td.optimizers.from_optax(optax.lion),
         r"lr must be given: optax.lion has no default learning rate"),
        (lambda: td.optimizers.from_optax(optax.lion, lr=1e-3, b1=1.5),
         r"b1 must be in \[0, 1\), got 1.5"),
        (lambda: td.optimizers.from_optax(optax.adafactor, lr=1e-3, decay_rate=float("nan")),
         r"decay_rate must be a finite real number, got nan"),
        (lambda: td.optimizers.from_optax(optax.lion, lr=1e-3, learning_rate=1e-3),
         r"give the learning rate once"),
        (lambda: td.optimizers.adam(weight_decay=0.1, weight_decay_coupling="lr"),
         r"weight_decay_coupling must be one of \['l2', 'decoupled', 'independent'\]"),
        (lambda: td.optimizers.from_optax(optax.adamw, lr=1e-3, weight_decay_mask="all"),
         r"weight_decay_mask and decay_embeddings apply to traindyn's weight decay"),
        (lambda: td.optimizers.adam(weight_decay=0.1, weight_decay_mask="biases"),
         r"weight_decay_mask must be one of \['auto', 'all'\]"),
        (lambda: td.optimizers.adam(orthogonal="rows"), r"orthogonal must be one of"),
        (lambda: td.optimizers.adam(schedule="cosine", warmup_steps=5, warmup_fraction=0.1),
         r"give warmup_steps or warmup_fraction, not both"),
        (lambda: td.optimizers.adam(schedule="warmup", final_lr_fraction=0.1),
         r"final_lr_fraction has no effect on schedule 'warmup'"),
        (lambda: td.optimizers.adam(schedule="cosine", warmup_fraction=1.5),
         r"warmup_fraction must be in \[0, 1\], got 1.5"),
        (lambda: td.optimizers.adam(family="lion"), r"family must be 'sgd' or 'adam'"),
        (lambda: td.optimizers.from_optax(optax.contrib.muon, lr=0.02, ns_coeffs="nope"),
         r"optax.contrib.muon refused its keywords"),
    ],
)
def test_bad_input_is_refused_before_anything_compiles(make, match):
    with count_compiles() as compiles:
        with pytest.raises(ValueError, match=match):
            make()
    assert compiles[0] == 0


@pytest.mark.parametrize(
    "axes, match",
    [
        (dict(clip_norm=[1.0, -1.0]), r"clip_norm must be > 0, got -1.0"),
        (dict(warmup_steps=[2.0, 50.0]), r"warmup_steps must be <= steps=10, got 50.0"),
        (dict(final_lr_fraction=[0.5, 2.0]), r"final_lr_fraction must be in \[0, 1\], got 2.0"),
    ],
)
def test_bad_swept_values_are_refused_before_anything_compiles(axes, match):
    task = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8, seed=0)
    opt = td.optimizers.sgd(0.1, clip_norm=1.0, schedule="cosine")
    spec = td.Spec(td.MLP(width=8, out_dim=1), task, opt, steps=10, log_every=5)
    with count_compiles() as compiles:
        with pytest.raises(ValueError, match=match):
            td.sweep(spec, seed=[0], **axes)
    assert compiles[0] == 0
