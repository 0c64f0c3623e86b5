"""Tests for dynamics.tasks: shapes, determinism, the math of each generator,
label noise (statistics and jax-traceability) and argument validation."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.datasets import load_digits

from dynamics import tasks as T

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23
U32 = EPS32 / 2  # unit roundoff of float32 round-to-nearest: |fl(v) - v| <= U32 |v|
EPS64 = float(np.finfo(np.float64).eps)

# Small instances of every generator (fast), used by the generic tests.
SMALL = {
    "teacher_student_linear": dict(dim=7, n_train=30, n_test=40, out_dim=3),
    "teacher_student_mlp": dict(dim=7, teacher_width=16, teacher_depth=2, n_train=30, n_test=40, out_dim=2),
    "gaussian_mixture": dict(n_classes=3, dim=5, n_train=30, n_test=40),
    "polynomial": dict(dim=9, n_train=30, n_test=40),
    "modular_arithmetic": dict(p=7, operation="add", train_fraction=0.5),
    "digits": dict(n_train=30, n_test=40),
    "markov_chain": dict(vocab_size=5, seq_len=4, n_train=30, n_test=40),
}
MSE_VARIANTS = {  # classification generators with one-hot mse targets
    "gaussian_mixture": dict(SMALL["gaussian_mixture"], loss="mse"),
    "modular_arithmetic": dict(SMALL["modular_arithmetic"], loss="mse"),
    "digits": dict(SMALL["digits"], loss="mse"),
}


def all_arrays(task):
    return [task.x_train, task.y_train, task.x_test, task.y_test, *task.noise]


def assert_same_task(a, b):
    for u, v in zip(all_arrays(a), all_arrays(b), strict=True):
        assert u.dtype == v.dtype and np.array_equal(u, v)


def test_registry_is_the_generators():
    assert set(T.TASKS) == set(SMALL)
    assert T.LOSSES == ("mse", "cross_entropy", "cross_entropy_z_loss")


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", sorted(set(SMALL) - {"markov_chain"}))  # per example
def test_shapes_and_dtypes_cross_entropy_or_regression(name):
    task = T.make(name, **SMALL[name])
    p, q, d = task.n_train, task.x_test.shape[0], task.in_dim
    assert task.x_train.shape == (p, d) and task.x_test.shape == (q, d)
    assert task.x_train.dtype == task.x_test.dtype == np.float32
    if task.loss == "mse":
        k = SMALL[name].get("out_dim", 1)
        assert task.y_train.shape == (p, k) and task.y_test.shape == (q, k)
        assert task.y_train.dtype == task.y_test.dtype == np.float32
        assert task.out_dim == k and task.n_classes is None
        assert len(task.noise) == 1 and task.noise[0].shape == (p, k)
        assert task.noise[0].dtype == np.float32
    else:
        assert task.y_train.shape == (p,) and task.y_test.shape == (q,)
        assert task.y_train.dtype == task.y_test.dtype == np.int32
        assert task.out_dim == task.n_classes
        assert 0 <= task.y_train.min() and task.y_train.max() < task.n_classes
        u, other = task.noise
        assert u.shape == other.shape == (p,)
        assert u.dtype == np.float32 and other.dtype == np.int32
    assert task.hparams() == {"label_noise": 0.0}
    line = task.summary()
    assert "\n" not in line and name in line and f"P={p}" in line and task.loss in line


@pytest.mark.parametrize("name", sorted(MSE_VARIANTS))
def test_one_hot_mse_variants(name):
    task = T.make(name, **MSE_VARIANTS[name])
    c = task.n_classes
    assert task.loss == "mse" and c is not None and task.out_dim == c
    for y in (task.y_train, task.y_test):
        assert y.shape[1] == c and y.dtype == np.float32
        assert set(np.unique(y)) <= {0.0, 1.0}
        assert np.array_equal(y.sum(axis=1), np.ones(len(y), np.float32))
    # Same data as the cross-entropy version, with labels one-hot encoded.
    ce = T.make(name, **dict(MSE_VARIANTS[name], loss="cross_entropy"))
    assert np.array_equal(task.x_train, ce.x_train)
    assert np.array_equal(task.y_train.argmax(1), ce.y_train)
    assert np.array_equal(task.y_test.argmax(1), ce.y_test)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_task_different_seed_different(name):
    a = T.make(name, **SMALL[name], seed=3)
    b = T.make(name, **SMALL[name], seed=3)
    c = T.make(name, **SMALL[name], seed=4)
    assert a is not b
    assert_same_task(a, b)
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.noise[0], c.noise[0])


@pytest.mark.parametrize("name", sorted(SMALL))
def test_config_is_json_and_regenerates_the_task(name):
    task = T.make(name, **SMALL[name], seed=5)
    config = json.loads(json.dumps(task.config))
    assert config["generator"] == name
    again = T.make(config.pop("generator"), **config)
    assert_same_task(task, again)


@pytest.mark.parametrize("name", ["teacher_student_linear", "teacher_student_mlp", "polynomial"])
def test_train_sets_are_nested_and_test_set_independent_of_n_train(name):
    args = {k: v for k, v in SMALL[name].items() if k != "n_train"}
    small = T.make(name, **args, n_train=10, seed=2)
    big = T.make(name, **args, n_train=25, seed=2)
    assert np.array_equal(small.x_train, big.x_train[:10])
    assert np.array_equal(small.y_train, big.y_train[:10])  # same teacher
    assert np.array_equal(small.x_test, big.x_test) and np.array_equal(small.y_test, big.y_test)


# --------------------------------------------------------------------------- teachers


def test_teacher_student_linear_targets():
    d, k = 30, 4
    task = T.teacher_student_linear(dim=d, n_train=200, n_test=300, out_dim=k, seed=11)
    beta = T.linear_teacher(d, k, seed=11)
    assert beta.shape == (d, k)
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        x64 = x.astype(np.float64)
        ref = x64 @ beta / np.sqrt(d)
        # y is ref rounded once to float32 (<= U32 relative), plus float64 summation
        # error of a D-term dot product (<= D * EPS64 * sum |x_i beta_i| / sqrt(D)).
        bound = U32 * np.abs(ref) + d * EPS64 * (np.abs(x64) @ np.abs(beta)) / np.sqrt(d)
        assert np.all(np.abs(y - ref) <= bound)
    # A different seed gives a different teacher (the test is not vacuous).
    assert not np.allclose(T.linear_teacher(d, k, seed=12), beta)


def _reference_activation(name, h):
    # Written independently of tasks.py (gelu via the normal CDF, not erf).
    return {
        "linear": lambda: h,
        "relu": lambda: np.where(h > 0, h, 0.0),
        "tanh": lambda: np.tanh(h),
        "erf": lambda: np.vectorize(math.erf)(h),
        "gelu": lambda: h * scipy.stats.norm.cdf(h),
    }[name]()


@pytest.mark.parametrize("activation", T.ACTIVATIONS)
def test_teacher_student_mlp_targets(activation):
    d, width, depth, k = 6, 12, 2, 2
    task = T.teacher_student_mlp(dim=d, teacher_width=width, teacher_depth=depth,
                                 activation=activation, n_train=50, n_test=20, out_dim=k, seed=1)
    w0, w1, w2 = T.mlp_teacher(d, width, depth, k, seed=1)
    assert w0.shape == (d, width) and w1.shape == (width, width) and w2.shape == (width, k)
    x = task.x_train.astype(np.float64)
    h1 = x @ w0 / np.sqrt(d)
    h2 = _reference_activation(activation, h1) @ w1 / np.sqrt(width)
    ref = _reference_activation(activation, h2) @ w2 / np.sqrt(width)
    # float64 reference vs float64 teacher: they differ only by float64 rounding
    # (a few hundred EPS64 at most for these sizes), far below float32 resolution.
    np.testing.assert_allclose(T.mlp_teacher_apply((w0, w1, w2), x, activation), ref,
                               rtol=1e-12, atol=1e-12)
    # Stored targets are that value rounded once to float32.
    np.testing.assert_array_equal(task.y_train,
                                  T.mlp_teacher_apply((w0, w1, w2), x, activation).astype(np.float32))


def test_polynomial_target_and_input_scale():
    d, n = 50, 4000
    task = T.polynomial(dim=d, n_train=n, n_test=10, seed=7)
    beta = T.polynomial_teacher(d, seed=7)
    x = task.x_train.astype(np.float64)
    proj = x @ beta
    ref = 0.5 * proj**2
    # Rounding of y to float32 (U32 relative) plus float64 error in the dot product
    # squared (2 * D * EPS64 relative to (sum |x_i beta_i|)^2).
    bound = U32 * ref + 2 * d * EPS64 * (np.abs(x) @ np.abs(beta)) ** 2
    assert task.y_train.shape == (n, 1)
    assert np.all(np.abs(task.y_train[:, 0] - ref) <= bound)
    # x ~ N(0, I/D): D * x_ij^2 ~ chi^2_1 (mean 1, var 2); mean over n*d draws has
    # SE sqrt(2 / (n d)); 4 SE.
    assert abs(np.mean(d * x**2) - 1.0) < 4 * np.sqrt(2 / (n * d))
    # beta* . x ~ N(0, |beta*|^2 / D): its mean square over n draws has relative SE sqrt(2/n); 4 SE.
    var = beta @ beta / d
    assert abs(np.mean(proj**2) / var - 1.0) < 4 * np.sqrt(2 / n)


def test_gaussian_mixture_means_and_noise():
    c, d, sep, n = 4, 12, 3.0, 8000
    task = T.gaussian_mixture(n_classes=c, dim=d, separation=sep, n_train=n, n_test=10, seed=9)
    means = T.gaussian_mixture_means(c, d, sep, seed=9)
    # Orthonormal directions scaled by sep: Gram = sep^2 I up to float64 QR error (~d * EPS64).
    np.testing.assert_allclose(means @ means.T, sep**2 * np.eye(c), atol=1e-12)
    counts = np.bincount(task.y_train, minlength=c)
    assert counts.max() - counts.min() <= 1  # balanced by construction
    z = task.x_train.astype(np.float64) - means[task.y_train]
    # z ~ N(0, I): mean over n draws per coordinate has SE 1/sqrt(n); 4 SE (all d coords
    # jointly: 4 SE gives per-coordinate false-alarm 6e-5, times 12 coords < 1e-3).
    assert np.all(np.abs(z.mean(axis=0)) < 4 / np.sqrt(n))
    # per-coordinate sample variance of N(0,1): SE sqrt(2/n); 4 SE.
    assert np.all(np.abs(z.var(axis=0) - 1.0) < 4 * np.sqrt(2 / n))


# --------------------------------------------------------------------------- modular arithmetic


def _inverse(b, p):
    return next(k for k in range(1, p) if (b * k) % p == 1)  # brute force, independent of tasks.py


@pytest.mark.parametrize("operation", T.OPERATIONS)
@pytest.mark.parametrize("p,train_fraction", [(5, 0.5), (11, 0.3)])
def test_modular_arithmetic_labels_and_split(operation, p, train_fraction):
    task = T.modular_arithmetic(p=p, operation=operation, train_fraction=train_fraction, seed=4)
    assert task.n_classes == p and task.in_dim == 2 * p
    pairs = {}
    for split, x, y in (("train", task.x_train, task.y_train), ("test", task.x_test, task.y_test)):
        assert np.all(x[:, :p].sum(1) == 1) and np.all(x[:, p:].sum(1) == 1)
        assert set(np.unique(x)) <= {0.0, 1.0}
        a, b = x[:, :p].argmax(1), x[:, p:].argmax(1)
        expected = {
            "add": lambda a, b: (a + b) % p,
            "sub": lambda a, b: (a - b) % p,
            "mul": lambda a, b: (a * b) % p,
            "div": lambda a, b: (a * _inverse(b, p)) % p,
        }[operation]
        assert [int(v) for v in y] == [expected(int(i), int(j)) for i, j in zip(a, b)]
        pairs[split] = [(int(i), int(j)) for i, j in zip(a, b)]
    all_pairs = {(i, j) for i in range(p) for j in range(p) if operation != "div" or j != 0}
    train, test = pairs["train"], pairs["test"]
    assert len(set(train)) == len(train) and len(set(test)) == len(test)  # no duplicates
    assert not set(train) & set(test)
    assert set(train) | set(test) == all_pairs
    assert len(train) == round(train_fraction * len(all_pairs))


# --------------------------------------------------------------------------- digits


def test_digits_standardization_on_train_split():
    task = T.digits(n_train=600, n_test=200, seed=1)
    raw = T.digits(n_train=600, n_test=200, seed=1, standardize=False)
    x = task.x_train.astype(np.float64)
    constant = raw.x_train.std(axis=0) == 0
    assert constant.any() and not constant.all()  # the digits border pixels: both cases tested
    # Each float32 value carries relative rounding <= U32, so the float64 mean of
    # standardized values is off by <= U32 * mean|z| <= U32 and the std by about U32;
    # 4 * EPS32 leaves margin for the float64 arithmetic itself.
    assert np.all(np.abs(x[:, ~constant].mean(axis=0)) < 4 * EPS32)
    assert np.all(np.abs(x[:, ~constant].std(axis=0) - 1.0) < 4 * EPS32)
    assert np.all(x[:, constant] == 0.0)  # centred only, no division by zero
    assert np.all(np.isfinite(task.x_test))
    # The test split uses the train statistics, not its own.
    # raw pixel values are small integers, exact in float32; statistics in float64.
    raw_train = raw.x_train.astype(np.float64)
    mean, std = raw_train.mean(0), raw_train.std(0)
    std = np.where(std > 0, std, 1.0)
    ref = (raw.x_test.astype(np.float64) - mean) / std
    # Stored value = ref rounded once to float32 (<= U32 relative); 1e-12 absorbs the
    # float64 differences between our statistics and the module's (~1e-15).
    assert np.all(np.abs(task.x_test - ref) <= U32 * np.abs(ref) + 1e-12)


def test_digits_classes_filter_and_relabel():
    classes = (8, 3, 5)
    task = T.digits(n_train=200, n_test=100, classes=classes, standardize=False, seed=2)
    assert task.n_classes == 3 and set(np.unique(task.y_train)) == {0, 1, 2}
    x_raw, y_raw = load_digits(return_X_y=True)
    lookup = {}
    for row, label in zip(x_raw, y_raw):
        lookup.setdefault(row.astype(np.float32).tobytes(), set()).add(int(label))
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        for row, label in zip(x, y):
            assert classes[label] in lookup[row.tobytes()]  # relabelled in the given order
    # n_test=None takes all the rest of the kept classes.
    rest = T.digits(n_train=200, classes=classes, seed=2)
    available = int(np.isin(y_raw, classes).sum())
    assert rest.n_train + rest.x_test.shape[0] == available
    with pytest.raises(ValueError, match=rf"exceeds the {available} examples available"):
        T.digits(n_train=200, n_test=available - 199, classes=classes)
    T.digits(n_train=200, n_test=available - 200, classes=classes)  # exactly all: fine
    with pytest.raises(ValueError, match="1796"):
        T.digits(n_train=1797)  # nothing left for the test set
    with pytest.raises(ValueError, match="classes"):
        T.digits(classes=(3,))
    with pytest.raises(ValueError, match="classes"):
        T.digits(classes=(3, 3))
    with pytest.raises(ValueError, match="classes"):
        T.digits(classes=(3, 10))


# --------------------------------------------------------------------------- label noise


def test_cross_entropy_label_noise_statistics():
    c, p, s = 5, 10000, 0.3
    task = T.gaussian_mixture(n_classes=c, dim=c, n_train=p, n_test=10, label_noise=s, seed=0)
    assert task.hparams() == {"label_noise": s}
    y = task.y_train
    noisy = np.asarray(task.train_targets(s))
    assert noisy.dtype == np.int32 and noisy.shape == (p,)
    flipped = noisy != y
    # Binomial(P, s) fraction: SE = sqrt(s (1 - s) / P); 4 SE.
    assert abs(flipped.mean() - s) < 4 * math.sqrt(s * (1 - s) / p)
    # Flipped labels are the stored other-class draws; at s = 1 every label changes.
    assert np.array_equal(noisy[flipped], task.noise[1][flipped])
    all_flipped = np.asarray(task.train_targets(1.0))
    assert np.all(all_flipped != y) and np.all((0 <= all_flipped) & (all_flipped < c))
    # The new class is uniform over the C-1 wrong ones: each shift has count
    # Binomial(P, 1/(C-1)); 4 SE per cell.
    shift = np.bincount((all_flipped - y) % c, minlength=c)
    q = 1 / (c - 1)
    assert shift[0] == 0
    assert np.all(np.abs(shift[1:] - p * q) < 4 * math.sqrt(p * q * (1 - q)))
    # No noise at 0, flipped sets nested in s, test labels untouched.
    assert np.array_equal(np.asarray(task.train_targets(0.0)), y)
    assert np.all(flipped[np.asarray(task.train_targets(0.2)) != y])
    clean = T.gaussian_mixture(n_classes=c, dim=c, n_train=p, n_test=10, seed=0)
    assert np.array_equal(clean.y_test, task.y_test) and np.array_equal(clean.y_train, y)


def test_mse_label_noise_is_scaled_fixed_gaussian():
    p, k, s = 5000, 2, 0.7
    task = T.teacher_student_linear(dim=10, n_train=p, n_test=10, out_dim=k, label_noise=s, seed=3)
    y, xi = task.y_train.astype(np.float64), task.noise[0].astype(np.float64)
    noisy = np.asarray(task.train_targets(s))
    assert noisy.dtype == np.float32 and noisy.shape == (p, k)
    # noisy = fl(y + fl(s32 * xi)): two float32 roundings (or one with a fused
    # multiply-add), each <= U32 relative to |y| + |s xi|; 2 * EPS32 bounds both.
    s32 = float(np.float32(s))
    assert np.all(np.abs((noisy - y) - s32 * xi) <= 2 * EPS32 * (np.abs(y) + np.abs(s32 * xi)))
    # Sample std of the n = P K noise values: relative SE 1/sqrt(2n) (chi-square); 4 SE.
    n = p * k
    assert abs((noisy - y).std() / s - 1.0) < 4 / math.sqrt(2 * n)
    assert np.array_equal(np.asarray(task.train_targets(0.0)), task.y_train)
    assert np.array_equal(np.asarray(task.train_targets()), noisy)  # default = task.label_noise


@pytest.mark.parametrize("name,args", [
    ("teacher_student_linear", dict(dim=5, n_train=64, n_test=8, out_dim=2)),
    ("gaussian_mixture", dict(n_classes=4, dim=5, n_train=64, n_test=8)),
])
def test_train_targets_under_jit_and_vmap(name, args):
    task = T.make(name, **args, seed=1)
    grid = jnp.array([0.0, 0.25, 0.5, 1.0], dtype=jnp.float32)
    eager = np.stack([np.asarray(task.train_targets(float(s))) for s in grid])
    jitted = np.stack([np.asarray(jax.jit(task.train_targets)(s)) for s in grid])
    vmapped = np.asarray(jax.jit(jax.vmap(task.train_targets))(grid))
    assert vmapped.shape == (len(grid),) + task.y_train.shape
    assert not np.array_equal(eager[0], eager[-1])  # the noise level matters
    if task.loss == "cross_entropy":
        np.testing.assert_array_equal(jitted, eager)
        np.testing.assert_array_equal(vmapped, eager)
    else:
        # jit may fuse the multiply-add (FMA), changing one float32 rounding:
        # <= EPS32 relative to |y| + |s xi|.
        scale = np.abs(task.y_train) + np.abs(np.asarray(grid)[:, None, None] * task.noise[0])
        assert np.all(np.abs(jitted - eager) <= EPS32 * scale)
        assert np.all(np.abs(vmapped - eager) <= EPS32 * scale)


# --------------------------------------------------------------------------- from_arrays and Task


def test_from_arrays_basics():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    task = T.from_arrays(x, y)
    assert task.y_train.shape == (20, 1) and task.x_train.dtype == np.float32
    assert task.config["test"] == "train" and np.array_equal(task.x_test, task.x_train)
    assert task.noise == () and np.array_equal(np.asarray(task.train_targets(0.0)), task.y_train)
    with pytest.raises(ValueError, match="label_noise"):
        task.train_targets(0.1)
    with pytest.raises(ValueError, match="label_noise"):
        T.from_arrays(x, y, label_noise=0.1)  # no seed: no noise draws
    labels = np.array([0, 2, 1, 2] * 5)
    ce = T.from_arrays(x, labels, x[:4], labels[:4], loss="cross_entropy", name="mine")
    assert ce.n_classes == 3 and ce.y_train.dtype == np.int32 and ce.config["test"] == "given"
    assert ce.name == "mine"
    seeded = T.from_arrays(x, labels, loss="cross_entropy", label_noise=0.5, seed=1)
    assert np.all(seeded.noise[1] != seeded.y_train)
    # The task owns read-only copies of the arrays.
    x[0, 0] = 99.0
    assert task.x_train[0, 0] != 99.0
    with pytest.raises(ValueError):
        task.x_train[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        task.loss = "cross_entropy"


@pytest.mark.parametrize("array_name", ["x_train", "y_train", "x_test", "y_test"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_from_arrays_rejects_non_finite_naming_the_array(array_name, bad):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.standard_normal((6, 2)), y_train=rng.standard_normal(6),
                  x_test=rng.standard_normal((4, 2)), y_test=rng.standard_normal(4))
    arrays[array_name][1] = bad
    with pytest.raises(ValueError, match=rf"{array_name} contains NaN or inf"):
        T.from_arrays(**arrays)


def test_from_arrays_and_task_shape_and_dtype_errors():
    x, y = np.zeros((5, 2)), np.zeros(5)
    with pytest.raises(ValueError, match=r"\(5, 2\).*\(4, 1\)"):
        T.from_arrays(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"x_train.*x_test.*\(5, 2\).*\(3, 4\)"):
        T.from_arrays(x, y, np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="x_test and y_test"):
        T.from_arrays(x, y, x_test=x)
    with pytest.raises(ValueError, match=r"x_train must have a batch axis.*got shape \(5,\)"):
        T.from_arrays(np.zeros(5), y)
    with pytest.raises(ValueError, match="y_train must hold integer class labels"):
        T.from_arrays(x, np.array([0.0, 1.0, 1.0, 0.0, 1.0]), loss="cross_entropy")
    with pytest.raises(ValueError, match="n_classes"):
        T.from_arrays(x, np.array([0, 1, 2, 0, 1]), loss="cross_entropy", n_classes=2)
    with pytest.raises(ValueError, match="x_train contains NaN or inf"):
        T.Task("t", np.full((2, 1), np.nan), np.zeros((2, 1)), np.zeros((1, 1)), np.zeros((1, 1)), "mse")
    with pytest.raises(ValueError, match="loss"):
        T.Task("t", np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((1, 1)), np.zeros((1, 1)), "hinge")
    with pytest.raises(ValueError, match="label_noise"):
        T.Task("t", np.zeros((2, 1)), np.array([0, 1]), np.zeros((1, 1)), np.array([0]),
               "cross_entropy", n_classes=2, label_noise=1.5)
    with pytest.raises(ValueError, match=r"y_train labels must lie in \[0, n_classes=2\)"):
        T.Task("t", np.zeros((2, 1)), np.array([0, 2]), np.zeros((1, 1)), np.array([0]),
               "cross_entropy", n_classes=2)


@pytest.mark.parametrize("call,field_name", [
    (lambda: T.teacher_student_linear(n_train=0), "n_train"),
    (lambda: T.teacher_student_linear(n_test=-1), "n_test"),
    (lambda: T.teacher_student_linear(dim=2.5), "dim"),
    (lambda: T.teacher_student_linear(seed=-1), "seed"),
    (lambda: T.teacher_student_linear(label_noise=-0.1), "label_noise"),
    (lambda: T.teacher_student_mlp(activation="softplus"), "activation"),
    (lambda: T.teacher_student_mlp(teacher_depth=0), "teacher_depth"),
    (lambda: T.gaussian_mixture(n_classes=5, dim=4), "n_classes"),
    (lambda: T.gaussian_mixture(label_noise=1.2), "label_noise"),
    (lambda: T.gaussian_mixture(loss="hinge"), "loss"),
    (lambda: T.polynomial(n_train=True), "n_train"),
    (lambda: T.modular_arithmetic(operation="pow"), "operation"),
    (lambda: T.modular_arithmetic(p=96), "p"),
    (lambda: T.modular_arithmetic(p=1), "p"),
    (lambda: T.modular_arithmetic(train_fraction=1.0), "train_fraction"),
    (lambda: T.digits(n_train=0), "n_train"),
    (lambda: T.digits(loss="hinge"), "loss"),
    (lambda: T.from_arrays(np.zeros((2, 1)), np.zeros(2), loss="hinge"), "loss"),
])
def test_bad_arguments_name_the_field(call, field_name):
    with pytest.raises(ValueError, match=rf"^{field_name}\b"):
        call()


def test_bad_argument_message_shows_value_and_allowed():
    with pytest.raises(ValueError, match=r"^n_train must be a positive int, got 0$"):
        T.teacher_student_linear(n_train=0)
    with pytest.raises(ValueError, match=r"^loss must be one of \('mse', 'cross_entropy', "
                                         r"'cross_entropy_z_loss'\), got 'hinge'$"):
        T.digits(loss="hinge")


def test_make_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="modular_arithmetic") as err:
        T.make("mnist")
    assert "'mnist'" in str(err.value) and all(name in str(err.value) for name in T.TASKS)


def test_markov_chain_bayes_loss_is_the_cross_entropy_of_its_chain():
    from dynamics.tasks.sequences import transition_matrix

    task = T.markov_chain(vocab_size=8, seq_len=6, n_train=4, n_test=20000,
                                 concentration=0.5, seed=3)
    p = transition_matrix(8, 0.5, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    x, y = task.x_test, task.y_test
    assert x.shape == y.shape == (20000, 6) and x.dtype == np.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # targets are the next tokens
    # Monte Carlo: the mean of -log P[x_t, y_t] over 120,000 positions estimates L*
    # with standard error std/sqrt(n) (the positions of one sequence are correlated,
    # so the bound uses the 20,000 sequences' means); 4 standard errors
    nll = -np.log(p[x, y]).mean(axis=1)
    se = nll.std() / np.sqrt(nll.size)
    assert abs(nll.mean() - T.markov_chain_bayes_loss(task)) <= 4 * se
    # the empirical bigram frequencies are P (binomial errors, 5 standard errors)
    counts = np.zeros((8, 8))
    np.add.at(counts, (x.ravel(), y.ravel()), 1)
    freq = counts / counts.sum(axis=1, keepdims=True)
    err = np.sqrt(p * (1 - p) / counts.sum(axis=1, keepdims=True))
    assert np.all(np.abs(freq - p) <= 5 * err + 1e-12)
    with pytest.raises(ValueError, match="concentration must be a finite real number > 0"):
        T.markov_chain(concentration=0.0)
