"""Oracles of the grokking-corrupted reproduction (Doshi et al. 2024): the IPR and the
Fourier IPR against their closed forms, the corrupted modular-arithmetic data (exact
count, wrong labels, seeded), pruning against the dense network without the pruned
neurons, the accuracy per group and the memorisation scores against direct
computations, the paper's initialisation and Adam's loss-scale equivalence, and (slow)
the quick preset end to end."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynamics as td
from dynamics import activations
from dynamics.example_groups import GroupAccuracy
from dynamics.fourier import fourier_ipr, ipr, neuron_fourier_ipr
from dynamics.pruning import prune_neurons
from dynamics.tasks.algorithmic import corruption_draws
from experiments import cli
from experiments import grokking_corrupted as exp

# ------------------------------------------------------------------------------ the IPR


@pytest.mark.parametrize("n", [5, 49, 200])
def test_ipr_of_a_flat_vector_is_one_over_n(n, x64):
    # equal moduli: n (1/sqrt n)^4 = 1/n at r = 2, n^(1-r) at any r; signs do not matter
    # (|v|). float64 sums of n equal terms: 1e-12 relative.
    v = np.where(np.arange(n) % 2, 1.0, -1.0)
    assert float(ipr(v)) == pytest.approx(1 / n, rel=1e-12)
    assert float(ipr(3.0 * v, r=3)) == pytest.approx(n ** -2.0, rel=1e-12)
    assert float(ipr(np.eye(n)[1])) == pytest.approx(1.0, rel=1e-12)


def test_ipr_of_two_entries_is_the_closed_form(x64):
    # (a^4 + b^4) / (a^2 + b^2)^2: between 1/2 (equal) and 1 (one entry)
    a, b = 0.3, -1.7
    want = (a**4 + b**4) / (a**2 + b**2) ** 2
    assert float(ipr(np.array([0.0, a, 0.0, b]))) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("p", [7, 59, 97])
def test_fourier_ipr_of_a_pure_mode_is_one_and_of_a_delta_is_flat(p, x64):
    # cos(2 pi f n / p + phi), 0 < f < p/2: |rfft| is p/2 at f and 0 elsewhere (up to
    # float64 rounding, ~1e-15 relative, which enters the IPR squared): IPR 1 to 1e-12.
    # A delta e_j has |rfft| = 1 at all p // 2 + 1 frequencies: IPR 1 / (p // 2 + 1).
    n = np.arange(p)
    for f in (1, p // 3, p // 2):
        mode = 0.7 * np.cos(2 * np.pi * f * n / p + 0.4)
        assert float(fourier_ipr(mode)) == pytest.approx(1.0, abs=1e-12)
    assert float(fourier_ipr(np.eye(p)[3])) == pytest.approx(1 / (p // 2 + 1), rel=1e-12)
    # two modes of amplitudes A, B: rfft moduli A p/2 and B p/2, so the two-entry form
    two = 2.0 * np.cos(2 * np.pi * n / p) + 0.5 * np.sin(2 * np.pi * 2 * n / p)
    want = (2.0**4 + 0.5**4) / (2.0**2 + 0.5**2) ** 2
    assert float(fourier_ipr(two)) == pytest.approx(want, rel=1e-12)


def test_neuron_fourier_ipr_is_the_mean_over_the_three_weight_vectors(x64):
    # dense: numpy's rfft of every column of U, V and row of W, the IPR by hand, the mean
    # of the three; neuron 0 is made periodic (IPR 1 exactly), neuron 1 a delta in U
    p, width = 11, 6
    rng = np.random.default_rng(0)
    w_in, w_out = rng.normal(size=(2 * p, width)), rng.normal(size=(width, p))
    n = np.arange(p)
    w_in[:p, 0] = np.cos(2 * np.pi * 3 * n / p)
    w_in[p:, 0] = np.sin(2 * np.pi * 3 * n / p)
    w_out[0] = np.cos(2 * np.pi * 3 * n / p + 1.0)
    w_in[:p, 1] = np.eye(p)[4]
    params = ({"w": jnp.asarray(w_in)}, {"w": jnp.asarray(w_out)})
    got = np.asarray(neuron_fourier_ipr(params, p))

    def by_hand(v):
        m = np.abs(np.fft.rfft(v))
        return np.sum((m / np.linalg.norm(m)) ** 4)

    want = [(by_hand(w_in[:p, k]) + by_hand(w_in[p:, k]) + by_hand(w_out[k])) / 3
            for k in range(width)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="one-hot pairs"):
        neuron_fourier_ipr(params, p + 1)


# ----------------------------------------------------------------- the corrupted data


def _true_labels(task):
    p = task.config["p"]
    x = np.asarray(task.x_train)
    return (np.argmax(x[:, :p], 1) + np.argmax(x[:, p:], 1)) % p


@pytest.mark.parametrize("xi", [0.0, 0.1, 0.35, 1.0])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_corruption_relabels_exactly_the_fraction_with_wrong_labels(xi, loss):
    p = 13
    task = td.tasks.modular_arithmetic(p=p, train_fraction=0.5, seed=2, loss=loss,
                                       corrupt_fraction=xi)
    clean = td.tasks.modular_arithmetic(p=p, train_fraction=0.5, seed=2, loss=loss)
    stored = np.asarray(task.y_train)
    stored = stored if loss == "cross_entropy" else np.argmax(stored, 1)
    true = _true_labels(task)
    wrong = np.nonzero(stored != true)[0]
    assert wrong.size == round(xi * task.n_train)     # exactly the stated count
    rows, true_rows = td.tasks.corrupted_rows(task)
    np.testing.assert_array_equal(rows, wrong)
    np.testing.assert_array_equal(true_rows, true[rows])
    assert np.all((stored >= 0) & (stored < p))
    # the split and the test set are those of the uncorrupted task, bit for bit
    np.testing.assert_array_equal(task.x_train, clean.x_train)
    np.testing.assert_array_equal(task.y_test, clean.y_test)
    assert task.config["corrupt_fraction"] == xi


def test_corruption_is_seeded_and_uniform_over_the_wrong_residues():
    p = 31
    a = td.tasks.modular_arithmetic(p=p, train_fraction=0.6, seed=5, corrupt_fraction=0.3)
    b = td.tasks.modular_arithmetic(p=p, train_fraction=0.6, seed=5, corrupt_fraction=0.3)
    c = td.tasks.modular_arithmetic(p=p, train_fraction=0.6, seed=6, corrupt_fraction=0.3)
    np.testing.assert_array_equal(a.y_train, b.y_train)     # the same seed: the same draw
    assert not np.array_equal(td.tasks.corrupted_rows(a)[0],
                              td.tasks.corrupted_rows(c)[0])
    # the shift (wrong - true) mod p is uniform on {1, ..., p-1}: over 20000 draws each of
    # the 30 values has 667 +- 26 counts; 6 sigma = 155 catches a shift that skips values
    labels = np.random.default_rng(0).integers(0, p, 20000).astype(np.int32)
    rows, wrong = corruption_draws(labels, p, 1.0, seed=0)
    shift = (wrong - labels[rows]) % p
    counts = np.bincount(shift, minlength=p)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] - 20000 / 30) < 155), counts


def test_corruption_of_token_tasks_changes_the_answer_position_only():
    task = td.tasks.modular_arithmetic(p=7, train_fraction=0.6, seed=1, encoding="tokens",
                                       corrupt_fraction=0.5)
    y, x = np.asarray(task.y_train), np.asarray(task.x_train)
    np.testing.assert_array_equal(y[:, 0], x[:, 1])        # b and "=" untouched
    assert np.all(y[:, 1] == 7)
    rows, true = td.tasks.corrupted_rows(task)
    assert rows.size == round(0.5 * task.n_train)
    np.testing.assert_array_equal(true, (x[rows, 0] + x[rows, 1]) % 7)
    assert np.all(y[rows, 2] != true)


def test_corrupt_fraction_is_checked_and_is_a_static_field():
    with pytest.raises(ValueError, match="corrupt_fraction"):
        td.tasks.modular_arithmetic(p=7, corrupt_fraction=1.5)
    task = td.tasks.modular_arithmetic(p=7, train_fraction=0.6)
    more = task.with_static("corrupt_fraction", 0.4)
    assert td.tasks.corrupted_rows(more)[0].size == round(0.4 * task.n_train)
    with pytest.raises(ValueError, match="modular_arithmetic"):
        td.tasks.corrupted_rows(td.tasks.from_arrays(np.ones((4, 2)), np.ones((4, 1))))


# ------------------------------------------------------------------------- pruning


def test_pruning_equals_the_dense_network_without_those_neurons(x64):
    # an MLP with biases, two hidden layers; pruning neurons {1, 4} of the first hidden
    # layer equals deleting them (their columns of W0, entries of b0, rows of W1) from
    # a dense numpy forward pass: float64, 1e-12
    model = td.MLP(width=6, depth=2, out_dim=3, activation="quadratic",
                   parametrization="standard", bias=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 4), jnp.float64)
    params = model.init(jax.random.PRNGKey(1), x)
    pruned = prune_neurons(params, [1, 4])
    keep = np.array([0, 2, 3, 5])
    w0, b0 = np.asarray(params[0]["w"])[:, keep], np.asarray(params[0]["b"])[keep]
    h = (np.asarray(x) @ w0 + b0) ** 2
    h = (h @ np.asarray(params[1]["w"])[keep] + np.asarray(params[1]["b"])) ** 2
    out = h @ np.asarray(params[2]["w"]) + np.asarray(params[2]["b"])
    np.testing.assert_allclose(model.apply(pruned, x), out, rtol=1e-12)
    # exactly those entries are zero, the rest unchanged; the input is not modified
    for name, axis, layer in (("w", 1, 0), ("b", 0, 0), ("w", 0, 1)):
        got, before = np.asarray(pruned[layer][name]), np.asarray(params[layer][name])
        gone = np.take(got, [1, 4], axis=axis)
        assert np.all(gone == 0)
        np.testing.assert_array_equal(np.take(got, keep, axis=axis),
                                      np.take(before, keep, axis=axis))
        assert np.all(np.take(before, [1, 4], axis=axis) != 0)
    np.testing.assert_array_equal(pruned[2]["w"], params[2]["w"])
    mask = np.zeros(6, bool)
    mask[[1, 4]] = True
    for a, b in zip(jax.tree.leaves(prune_neurons(params, mask)), jax.tree.leaves(pruned)):
        np.testing.assert_array_equal(a, b)


def test_pruning_refuses_bad_neurons_and_layers():
    params = ({"w": jnp.ones((3, 4))}, {"w": jnp.ones((4, 2))})
    with pytest.raises(ValueError, match="neurons must be indices"):
        prune_neurons(params, [4])
    with pytest.raises(ValueError, match="mask must have shape"):
        prune_neurons(params, np.zeros(3, bool))
    with pytest.raises(ValueError, match="layer must index a hidden layer"):
        prune_neurons(params, [0], layer=1)


# --------------------------------------------------------- the experiment's measurements


def test_quadratic_activation_and_the_papers_initialisation():
    x = jnp.array([-2.0, 0.5, 3.0])
    np.testing.assert_array_equal(activations.get("quadratic")(x), x * x)
    model = exp.make_model(p=97, width=2000)
    params = exp.PaperInit(model)(jax.random.PRNGKey(0), jnp.zeros((1, 194)))
    want = 0.5 / 4000 ** (1 / 3)
    for layer in params:
        # sample std of 194 x 2000 (or 2000 x 97) normal entries: relative error ~
        # 1/sqrt(2 n) < 2e-3; 1e-2 separates the two layers' own fan-in scales (x 3)
        assert float(jnp.std(layer["w"])) == pytest.approx(want, rel=1e-2)


def test_group_accuracy_and_memorisation_scores_against_direct_computation(x64):
    # a short float64 run of the experiment's spec (p = 11): the logged accuracy of the
    # corrupted and clean groups at the last step recomputed from the final parameters,
    # and the sum over neurons of the memorisation scores equal to the mean over the
    # corrupted rows of f_corrupted - f_true (the network is the sum of its neurons'
    # terms): float64, 1e-10
    task = exp.make_task(11, 0.6, 0.3).astype("float64")
    spec = exp.make_spec(task, width=16, lr=0.01, steps=20, log_every=10)
    assert any(isinstance(o, GroupAccuracy) for o in spec.observables)
    ds, states = td.sweep(spec, return_state=True)
    params = jax.tree.map(lambda a: np.asarray(a).reshape(a.shape[-2:]), states[()].params)
    rows, true = td.tasks.corrupted_rows(task)
    out = np.asarray(spec.model.apply(params, jnp.asarray(task.x_train)))
    stored = np.argmax(np.asarray(task.y_train), 1)
    hits = np.argmax(out, 1) == stored
    clean = np.setdiff1d(np.arange(task.n_train), rows)
    last = ds.group_accuracy.isel(step=-1).squeeze()
    assert float(last.sel(group="corrupted")) == pytest.approx(hits[rows].mean(), abs=1e-12)
    assert float(last.sel(group="clean")) == pytest.approx(hits[clean].mean(), abs=1e-12)
    acc = exp.subset_accuracies(spec.model, params, task)
    assert acc["corrupted"] == pytest.approx(hits[rows].mean(), abs=1e-12)
    assert acc["corrupted_true"] == pytest.approx(
        np.mean(np.argmax(out[rows], 1) == true), abs=1e-12)
    scores = exp.memorisation_scores(params, task)
    direct = np.mean(out[rows, stored[rows]] - out[rows, true])
    assert float(np.sum(scores)) == pytest.approx(direct, rel=1e-10)
    ipr_logged = ds.neuron_fourier_ipr.isel(step=-1).squeeze().values
    np.testing.assert_allclose(ipr_logged, neuron_fourier_ipr(params, 11), rtol=1e-10)


def test_adam_on_a_scaled_loss_with_scaled_eps_is_adam_on_the_loss(x64):
    # the module's reason for eps = 1e-8 p: optax.adam on c L with eps c takes the same
    # steps as on L with eps (m and sqrt(v) scale by c); 5 steps, float64: 1e-12
    c, eps = 97.0, 1e-3
    theta0 = jnp.array([0.3, -1.2, 2.0])
    loss = lambda t: jnp.sum(jnp.sin(t) * t**2)  # noqa: E731

    def trajectory(scale, eps_):
        opt = optax.adam(0.1, b1=0.9, b2=0.98, eps=eps_)
        t, state = theta0, opt.init(theta0)
        for _ in range(5):
            updates, state = opt.update(jax.grad(lambda u: scale * loss(u))(t), state)
            t = optax.apply_updates(t, updates)
        return np.asarray(t)

    np.testing.assert_allclose(trajectory(c, c * eps), trajectory(1.0, eps), rtol=1e-12)
    assert np.max(np.abs(trajectory(c, eps) - trajectory(1.0, eps))) > 1e-4  # eps matters


# ----------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_preset_runs_and_its_claims_hold(tmp_path):
    assert cli.main(["run", "grokking-corrupted", "--preset", "quick",
                     "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    failed = [c["name"] for c in summary["claims"] if not c["passed"]]
    assert summary["passed"] and not failed, failed
    assert len(summary["claims"]) >= 12
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    ds = td.load(tmp_path / "results.nc")
    assert ds.pruning_curve.dims == ("seed", "weight_decay", "n_pruned", "subset")
    assert ds.sizes["seed"] == exp.PRESETS["quick"]["seeds"]
    assert math.isclose(ds.attrs["realised_corrupt_fraction"], 0.3, abs_tol=1e-3)
