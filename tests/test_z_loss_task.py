"""The z-loss as a task's training loss (``loss="cross_entropy_z_loss"``): the targets,
masks, label noise, classes and accuracy of the cross-entropy task, the loss
``cross_entropy + 1e-4 mean (log Z)^2`` (Chowdhery et al. 2022, Sec. 5) in training."""

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

import dynamics as td
from dynamics import losses
from dynamics import tasks as T
from dynamics.observables import Observable

Z = "cross_entropy_z_loss"

# every generator that takes labels, at small sizes, with label noise where it has any
LABEL_TASKS = {
    "gaussian_mixture": dict(n_classes=3, dim=4, n_train=20, n_test=10, label_noise=0.3,
                             seed=2),
    "digits": dict(n_train=30, n_test=10, classes=(1, 7), label_noise=0.3, seed=2),
    "modular_arithmetic": dict(p=5, train_fraction=0.6, label_noise=0.3, seed=2),
    "modular_arithmetic_tokens": dict(p=5, train_fraction=0.6, encoding="tokens",
                                      label_noise=0.3, seed=2),
    "markov_chain": dict(vocab_size=5, seq_len=4, n_train=12, n_test=6, seed=2),
}


def _make(name, **kwargs):
    return T.make(name.removesuffix("_tokens"), **kwargs)


def _same_arrays(a, b):
    for k, u in a.arrays().items():
        v = b.arrays()[k]
        assert u.dtype == v.dtype and np.array_equal(u, v), k


def test_the_target_kind_of_each_loss_is_written_once():
    assert losses.LOSSES == ("mse", "cross_entropy", Z)
    assert losses.LABEL_LOSSES == ("cross_entropy", Z)
    assert [losses.takes_labels(name) for name in losses.LOSSES] == [False, True, True]
    assert losses.get(Z) is losses.cross_entropy_z_loss
    for bad in ("z_loss", "hinge", None):
        with pytest.raises(ValueError, match=r"loss must be one of \('mse', 'cross_entropy', "
                                             r"'cross_entropy_z_loss'\)"):
            losses.takes_labels(bad)
        with pytest.raises(ValueError, match="cross_entropy_z_loss"):
            losses.get(bad)


@pytest.mark.parametrize("name", sorted(LABEL_TASKS))
def test_a_z_loss_task_is_the_cross_entropy_task_but_for_its_loss(name):
    ce = _make(name, **LABEL_TASKS[name], loss="cross_entropy")
    z = _make(name, **LABEL_TASKS[name], loss=Z)
    assert z.loss == Z and ce.loss == "cross_entropy" and z.config["loss"] == Z
    # inputs, integer labels, masks and both label-noise draws (u, other), bitwise
    _same_arrays(z, ce)
    assert len(z.noise) == 2 and z.y_train.dtype == np.int32
    assert (z.n_classes, z.out_dim, z.position_shape) == (ce.n_classes, ce.out_dim,
                                                          ce.position_shape)
    assert z.hparams() == ce.hparams()
    for level in (0.0, 0.3, 1.0):  # the flipped labels at each noise level
        got, want = (losses.split(task.train_targets(level))[0] for task in (z, ce))
        assert np.array_equal(np.asarray(got), np.asarray(want))
    if "label_noise" in LABEL_TASKS[name]:  # a flip probability: at most 1, as for labels
        with pytest.raises(ValueError, match="label_noise"):
            _make(name, **dict(LABEL_TASKS[name], label_noise=1.5), loss=Z)
    # regenerated from its config with its loss (a static sweep axis keeps it)
    other = z.with_static(*next(iter((k, v) for k, v in z.static_fields().items()
                                      if k in ("n_train", "train_fraction"))))
    assert other.loss == Z


def test_from_arrays_takes_the_z_loss_with_labels():
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((12, 3)), rng.integers(0, 4, 12)
    ce = T.from_arrays(x, labels, loss="cross_entropy", label_noise=0.5, seed=3)
    z = T.from_arrays(x, labels, loss=Z, label_noise=0.5, seed=3)
    _same_arrays(z, ce)
    assert z.n_classes == ce.n_classes == labels.max() + 1 and z.config["loss"] == Z
    with pytest.raises(ValueError, match=r"y_train must hold integer class labels for loss "
                                         r"'cross_entropy_z_loss'"):
        T.from_arrays(x, labels.astype(float), loss=Z)
    with pytest.raises(ValueError, match=r"n_classes must be set .* for loss "
                                         r"'cross_entropy_z_loss'"):
        T.Task("t", x, labels, x, labels, Z)
    with pytest.raises(ValueError, match="loss must be one of"):
        T.from_arrays(x, labels, loss="z_loss")
    with pytest.raises(ValueError, match="loss must be one of"):
        T.markov_chain(loss="mse")  # its targets are next tokens: a loss that takes labels


def test_kernel_predictions_refuse_the_z_loss():
    from kernels.predict import check_spec

    task = T.gaussian_mixture(n_classes=3, dim=4, n_train=8, n_test=4, loss=Z)
    spec = td.Spec(td.MLP(width=8, out_dim=3), task, td.optimizers.sgd(0.1), steps=2,
                   log_every=1)
    with pytest.raises(ValueError, match=r"task loss 'cross_entropy_z_loss' \(needs 'mse'\)"):
        check_spec(spec)


@dataclasses.dataclass(frozen=True)
class TrainOutputs(Observable):
    """The full-batch training outputs the ``loss`` observable's ``train_loss`` is
    computed from (the same forward pass, ``Context.train_outputs``)."""

    dims: ClassVar = {"train_outputs": ("example", "output")}

    def __call__(self, ctx):
        return {"train_outputs": ctx.train_outputs}


def _log_z(f):
    m = f.max(-1)
    return m + np.log(np.exp(f - m[..., None]).sum(-1))


def test_a_z_loss_task_trains_on_cross_entropy_plus_the_z_loss():
    """``train_loss`` of a z-loss run equals, on its own recorded outputs ``f`` and its
    noisy labels, ``mean(log Z - f_y) + 1e-4 mean (log Z)^2`` in float64 numpy, at
    initialisation and after training on it; at initialisation (same seed, same
    parameters) the cross-entropy run has the same outputs and accuracy and a loss lower by
    exactly the z term."""
    kw = dict(n_classes=8, dim=10, n_train=32, n_test=8, label_noise=0.25, seed=1)
    runs = {}
    for loss in ("cross_entropy", Z):
        task = T.gaussian_mixture(**kw, loss=loss)
        spec = td.Spec(td.MLP(width=16, out_dim=8, output_scale=4.0), task, td.optimizers.sgd(0.5),
                       steps=6, log_every=3,
                       observables=("loss", "accuracy", TrainOutputs()))
        runs[loss] = td.sweep(spec, seed=[0], progress=False).isel(seed=0)
    z, ce = runs[Z], runs["cross_entropy"]
    u, other = task.noise
    labels = np.where(u < kw["label_noise"], other, task.y_train)  # the flipped labels
    assert (labels != task.y_train).any()
    for step in range(z.sizes["step"]):
        f = z.train_outputs.isel(step=step).values.astype(np.float64)
        log_z = _log_z(f)
        ce_np = np.mean(log_z - f[np.arange(len(f)), labels])
        z_term = 1e-4 * np.mean(log_z ** 2)
        got = float(z.train_loss.isel(step=step))
        # float32 log-softmax and a mean over 32 terms of size 2-6 against float64: the
        # relative error is at most ~32 float32 epsilons (3.8e-6; measured 1e-8 to 5e-8);
        # the z term (measured 6e-4 to 7e-4 of the loss) is over 100 times the tolerance,
        # so a run trained on the plain cross-entropy fails both lines
        assert got == pytest.approx(ce_np + z_term, rel=5e-6)
        assert abs(got - ce_np) > 20 * 5e-6 * got
        acc = np.mean(f.argmax(-1) == labels)
        assert float(z.train_accuracy.isel(step=step)) == pytest.approx(acc, abs=1e-7)
    assert float(z.train_loss.isel(step=-1)) < float(z.train_loss.isel(step=0))  # it trains
    # step 0: same init; the losses differ by the z term of those outputs
    np.testing.assert_array_equal(z.train_outputs.isel(step=0), ce.train_outputs.isel(step=0))
    assert float(z.train_accuracy.isel(step=0)) == float(ce.train_accuracy.isel(step=0))
    f0 = z.train_outputs.isel(step=0).values.astype(np.float64)
    # two float32 losses of size ~5.9 (rounding 4.8e-7 each) differ by the float64 z term
    # (3.5e-3)
    assert float(z.train_loss.isel(step=0) - ce.train_loss.isel(step=0)) == pytest.approx(
        1e-4 * np.mean(_log_z(f0) ** 2), abs=2e-6)
    # and the trajectories part: the z-loss's gradient pulls every logit down
    assert not np.array_equal(z.train_outputs.isel(step=-1), ce.train_outputs.isel(step=-1))
