"""Optimizers and schedules against optax and closed forms; swept values are traced."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynamics as td


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


@pytest.mark.parametrize(
    "opt, reference",
    [
        (td.optimizers.sgd(0.1), optax.sgd(0.1)),
        (td.optimizers.momentum(0.1, momentum=0.8), optax.sgd(0.1, momentum=0.8)),
        (td.optimizers.momentum(0.1, momentum=0.8, nesterov=True),
         optax.sgd(0.1, momentum=0.8, nesterov=True)),
        (td.optimizers.adam(0.01, b1=0.8, b2=0.99), optax.adam(0.01, b1=0.8, b2=0.99)),
        (td.optimizers.adamw(0.01, weight_decay=0.1), optax.adamw(0.01, weight_decay=0.1)),
        (td.optimizers.sgd(0.1, weight_decay=0.01),
         optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.1))),
    ],
    ids=["sgd", "momentum", "nesterov", "adam", "adamw", "sgd_wd"],
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
        return updates["w"], state[0].hyperparams["learning_rate"]

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
