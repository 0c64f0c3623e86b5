"""Data of any shape: images, integer tokens, per-position targets with masks; the losses'
reduction over every axis but the last; task fields (n_train, p, ...) as static sweep axes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynamics as td
from dynamics import losses


# -- losses ------------------------------------------------------------------------------


def test_masked_per_position_cross_entropy_equals_a_hand_written_one():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4, 7))
    labels = rng.integers(0, 7, (5, 4))
    mask = rng.random((5, 4)) < 0.5
    mask[0, 0] = True
    total, count = 0.0, 0
    for i in range(5):
        for t in range(4):
            if mask[i, t]:
                z = logits[i, t]
                total += -(z[labels[i, t]] - np.log(np.sum(np.exp(z))))
                count += 1
    got = losses.cross_entropy(jnp.asarray(logits), losses.Masked(labels, mask))
    np.testing.assert_allclose(got, total / count, rtol=1e-6)  # float32 logsumexp
    # no mask: the mean over every position of every example
    full = np.mean([-(logits[i, t, labels[i, t]] - np.log(np.exp(logits[i, t]).sum()))
                    for i in range(5) for t in range(4)])
    np.testing.assert_allclose(losses.cross_entropy(jnp.asarray(logits), labels), full, rtol=1e-6)
    hits = (logits.argmax(-1) == labels)
    np.testing.assert_allclose(losses.accuracy(jnp.asarray(logits), losses.Masked(labels, mask)),
                               hits[mask].mean(), rtol=1e-7)
    assert losses.weight(losses.Masked(labels, mask)) == mask.sum()


def test_mse_reduces_every_axis_but_the_last():
    rng = np.random.default_rng(1)
    f, y = rng.standard_normal((6, 3, 2)), rng.standard_normal((6, 3, 2))
    mask = np.array([[1, 0, 1]] * 6, bool)
    # sum over the output axis K, mean over examples and positions (no factor 1/2);
    # float64: the same sums in another order
    with jax.enable_x64(True):
        np.testing.assert_allclose(losses.mse(f, y), np.mean(np.sum((f - y) ** 2, -1)),
                                   rtol=1e-12)
        np.testing.assert_allclose(losses.mse(f, losses.Masked(y, mask)),
                                   np.sum((f - y) ** 2, -1)[mask].mean(), rtol=1e-12)


# -- tasks of any shape ---------------------------------------------------------------------


def test_from_arrays_keeps_tokens_integer_and_takes_per_position_targets():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 11, (20, 5))
    y = rng.integers(0, 11, (20, 5))
    mask = np.zeros((20, 5), bool)
    mask[:, -1] = True
    task = td.tasks.from_arrays(x, y, loss="cross_entropy", n_classes=11, mask_train=mask)
    assert task.x_train.dtype == np.int32 and np.array_equal(task.x_train, x)
    assert task.y_train.shape == (20, 5) and task.out_dim == 11
    assert task.mask_test is not None and np.array_equal(task.mask_test, mask)  # test = train
    images = td.tasks.from_arrays(rng.standard_normal((10, 4, 4, 2)), rng.standard_normal((10, 3)))
    assert images.input_shape == (4, 4, 2) and images.x_train.dtype == np.float32
    seq = td.tasks.from_arrays(rng.standard_normal((10, 5, 3)), rng.standard_normal((10, 5, 2)))
    assert seq.position_shape == (10, 5) and seq.out_dim == 2


@pytest.mark.parametrize("make, match", [
    (lambda x, y: td.tasks.from_arrays(x, (y[:, 0] > 0).astype(np.int64)),
     r"y_train holds integer class labels .* loss='mse' would regress them"),
    (lambda x, y: td.tasks.from_arrays(x, y, mask_train=np.ones(3, bool)),
     r"mask_train must have shape \(8,\)"),
    (lambda x, y: td.tasks.from_arrays(x, y, mask_train=np.zeros(8, bool)),
     r"mask_train masks out every position"),
    (lambda x, y: td.tasks.from_arrays(x, y, mask_train=np.full(8, 2)),
     r"mask_train must hold booleans"),
    (lambda x, y: td.tasks.from_arrays(x, y, x[:2], y[:2, :1]),
     r"y_test and y_train must have the same"),
    (lambda x, y: td.tasks.from_arrays(x.astype(np.int64), y, x[:2], y[:2]),
     r"x_train and x_test must both be integers or both be real"),
    (lambda x, y: td.tasks.from_arrays(x, y, mask_test=np.ones(8, bool)),
     r"mask_test needs x_test and y_test"),
])
def test_bad_shapes_name_the_field(make, match):
    x = np.random.default_rng(0).standard_normal((8, 3))
    y = np.random.default_rng(1).standard_normal((8, 2))
    with pytest.raises(ValueError, match=match):
        make(x, y)


def test_modular_arithmetic_as_tokens():
    task = td.tasks.modular_arithmetic(p=7, train_fraction=0.6, encoding="tokens", seed=1)
    onehot = td.tasks.modular_arithmetic(p=7, train_fraction=0.6, seed=1)
    assert task.x_train.dtype == np.int32 and task.x_train.shape == (29, 3)
    assert task.n_classes == 8 and task.out_dim == 8  # 7 residues and "="
    a, b, eq = task.x_train.T
    assert np.all(eq == 7)
    assert np.array_equal(task.y_train[:, -1], (a + b) % 7)
    assert np.array_equal(task.y_train[:, 0], b) and np.all(task.y_train[:, 1] == 7)
    assert task.mask_train.tolist() == [[False, False, True]] * 29
    # the same split as the one-hot encoding (the same seed's shuffle)
    assert np.array_equal(onehot.x_train[:, :7].argmax(1), a)
    assert np.array_equal(onehot.y_train, task.y_train[:, -1])


def test_digits_as_images():
    flat = td.tasks.digits(n_train=40, n_test=20)
    image = td.tasks.digits(n_train=40, n_test=20, shape="image")
    assert image.x_train.shape == (40, 8, 8, 1)
    assert np.array_equal(image.x_train.reshape(40, 64), flat.x_train)


# -- task fields as static sweep axes --------------------------------------------------------


def mlp_spec(task, **kw):
    model = td.MLP(width=16, depth=1, out_dim=task.out_dim, activation="tanh")
    return td.Spec(model, task, td.optimizers.sgd(0.1), steps=6, log_every=3, **kw)


def test_an_n_train_sweep_of_a_generated_task_equals_each_task_alone():
    spec = mlp_spec(td.tasks.teacher_student_linear(dim=5, n_train=64, n_test=16, seed=2))
    ds = td.sweep(spec, seed=range(2), n_train=[8, 32])
    assert ds.train_loss.dims == ("seed", "n_train", "step")
    for n in (8, 32):
        alone = td.sweep(mlp_spec(td.tasks.teacher_student_linear(dim=5, n_train=n, n_test=16,
                                                                  seed=2)), seed=range(2))
        # the same runs on the same data: the batched and the single program differ in the
        # last bits of float32 matmuls at most
        np.testing.assert_allclose(ds.train_loss.sel(n_train=n), alone.train_loss, rtol=1e-6)
    # the training inputs of a smaller n_train are a prefix of those of a larger one
    small = spec.with_static("n_train", 8).task
    assert np.array_equal(small.x_train, spec.task.x_train[:8])


def test_an_n_train_sweep_of_user_arrays_takes_seeded_prefixes():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((40, 4)), rng.standard_normal((40, 1))
    task = td.tasks.from_arrays(x, y, x[:10], y[:10], seed=5)
    rows = np.random.default_rng([5, 3]).permutation(40)  # the seed's "split" stream
    prefix = task.with_static("n_train", 12)
    assert np.array_equal(prefix.x_train, task.x_train[rows[:12]])
    assert np.array_equal(prefix.x_test, task.x_test)
    ds = td.sweep(mlp_spec(task), n_train=[12, 40])
    alone = td.run(mlp_spec(prefix))
    np.testing.assert_allclose(ds.train_loss.sel(n_train=12), alone.train_loss, rtol=1e-6)
    with pytest.raises(ValueError, match="n_train must be <= the 40 training rows"):
        td.sweep(mlp_spec(task), n_train=[12, 41])


def test_a_sweep_over_p_adapts_the_models_outputs():
    spec = td.Spec(td.MLP(width=16, out_dim=5), td.tasks.modular_arithmetic(p=5),
                   steps=2, log_every=1)
    ds = td.sweep(spec, p=[5, 7])
    assert ds.train_loss.dims == ("p", "step") and np.isfinite(ds.train_loss).all()
    # the MLP and the teacher-student task both have "activation": name the one you mean
    ts = td.tasks.teacher_student_mlp(dim=3, n_train=8, n_test=4, teacher_width=8)
    spec = td.Spec(td.MLP(width=8), ts, steps=2, log_every=1)
    assert set(spec.static_fields()) >= {"model.activation", "task.activation", "n_train"}
    assert "activation" not in spec.static_fields()
    ds = td.sweep(spec, **{"task.activation": ["tanh", "relu"]})
    assert ds.train_loss.dims == ("task.activation", "step")
