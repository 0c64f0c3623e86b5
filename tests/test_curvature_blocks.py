"""Per-block curvature, preconditioned sharpness and top-subspace observables against
dense oracles (float64, ``jax.hessian`` + ``eigh`` on a 32-parameter MLP), inside vmapped
sweeps, and against runs alone."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import dynamics as td
from conftest import float64_teacher_task
from dynamics import curvature, losses
from dynamics.curvature import blocks, density
from dynamics.observables import Context

STEPS, LOG_EVERY = 8, 4  # log points 0, 1, 2
N_TRAIN = 20
SWEEP = {"seed": [0, 1], "lr": [0.1, 0.2]}
# Lanczos over the whole Krylov space (order = the block's dimension) gives the exact
# spectrum of the operator: in float64 it agrees with eigh of the dense matrix to ~1e-13
# relative (rounding in a 32-dimensional problem), so 1e-8 can only fail on a real error
# (a wrong block, a wrong operator), never on convergence.
RTOL = 1e-8


pytestmark = pytest.mark.usefixtures("x64")


def task():
    return float64_teacher_task(N_TRAIN)


def make_spec(observables, optimizer=None, steps=STEPS):
    model = td.MLP(width=5, depth=1, out_dim=2, activation="tanh")
    return td.Spec(model, task(), optimizer=optimizer or td.optimizers.sgd(0.2), steps=steps,
                   log_every=LOG_EVERY, observables=observables, strategy="vmap")


def sweep(spec):
    return td.sweep(spec, **SWEEP, return_state=True)


def final_state(states, i, j):
    return jax.tree.map(lambda a: a[i, j], states[()])


@functools.lru_cache(maxsize=None)
def training_loss(spec):
    x, y = jnp.asarray(spec.task.x_train), jnp.asarray(spec.task.y_train)
    return lambda params: losses.mse(spec.model.apply(params, x), y)


@functools.lru_cache(maxsize=None)
def _compiled_hessian(loss):
    def hessian(params):
        flat, unravel = ravel_pytree(params)
        return jax.hessian(lambda f: loss(unravel(f)))(flat)

    return jax.jit(hessian)


def dense_hessian(loss, params):
    """The dense Hessian in ``ravel_pytree`` order (one compile per loss)."""
    return np.asarray(_compiled_hessian(loss)(params))


def block_slice(params, name):
    """Indices of block ``name`` in ``ravel_pytree(params)`` (leaves concatenated in
    ``jax.tree.leaves`` order)."""
    sizes = [leaf.size for leaf in jax.tree.leaves(params)]
    starts = np.cumsum([0] + sizes)
    return np.concatenate([np.arange(starts[i], starts[i + 1])
                           for i in blocks.leaf_indices(params, name)])


def context(spec, params, key):
    """An observable's Context for the loss ``training_loss(spec)`` at ``params``."""
    x, y = jnp.asarray(spec.task.x_train), jnp.asarray(spec.task.y_train)
    return Context(params=params, params0=params, hparams={}, step=0, log_index=0,
                   data={"y_train": y}, outputs=lambda p, s, r=None: spec.model.apply(
                       p, x if r is None else x[r]),
                   loss=losses.mse, classification=False, key=key)


def measure(spec, fn):
    """``fn(ctx, *args)`` on the Context of ``params`` and ``key``, compiled:
    ``measured(params, key, *args)``."""
    return jax.jit(lambda params, key, *args: fn(context(spec, params, key), *args))


def init_params(spec, seed):
    return jax.jit(spec.model.init)(jax.random.PRNGKey(seed), jnp.asarray(spec.task.x_train))


def assert_alone_equals_sweep(spec, ds, names):
    """Run (seed 1, lr 0.2) alone equals its place in the vmapped sweep: batched and
    unbatched products differ in the last bits only (1e-9 relative is far above float64
    rounding and far below any value here)."""
    alone = td.run(dataclasses.replace(spec, strategy="loop"), seed=1, lr=0.2)
    for name in names:
        np.testing.assert_allclose(alone[name].values, ds[name].sel(seed=1, lr=0.2).values,
                                   rtol=1e-9, atol=1e-12)


# -- naming blocks ---------------------------------------------------------------------


def test_block_names_of_an_mlp_and_of_nested_dicts():
    params = jax.eval_shape(lambda: td.MLP(width=5, depth=2, out_dim=2).init(
        jax.random.PRNGKey(0), jnp.ones((1, 3))))
    assert blocks.leaf_paths(params) == ("0/b", "0/w", "1/b", "1/w", "2/b", "2/w")
    assert blocks.layer_names(params) == ("0", "1", "2")
    assert blocks.available_names(params)[:3] == ("0", "0/b", "0/w")
    assert blocks.leaf_indices(params, "1") == (2, 3)
    assert blocks.leaf_indices(params, "2/w") == (5,)
    nested = {"Dense_0": {"kernel": 1.0, "bias": 2.0}, "scale": 3.0}
    assert blocks.layer_names(nested) == ("Dense_0", "scale")
    with pytest.raises(ValueError, match=r"unknown parameter block 'Dense'.*'Dense_0/bias'"):
        blocks.leaf_indices(nested, "Dense")


def test_restrict_holds_the_other_leaves_fixed():
    params = ({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0])})

    def fn(p):
        return jnp.sum(p[0]["w"] ** 2) * p[1]["w"][0]

    fb = blocks.restrict(fn, params, "1")
    assert fb(blocks.block_leaves(params, "1")) == fn(params) == 15.0
    assert fb((jnp.array([2.0]),)) == 10.0  # only the block moved
    # its Hessian is the diagonal block of the full Hessian
    h = jax.hessian(lambda f: fn(ravel_pytree(params)[1](f)))(ravel_pytree(params)[0])
    hb = jax.hessian(blocks.restrict(fn, params, "0"))(blocks.block_leaves(params, "0"))
    np.testing.assert_array_equal(hb[0][0], h[:2, :2])


# -- one sweep for the observables of plain gradient descent --------------------------

NAMES = ("0", "1")  # the default blocks: the layers (3*5 + 5 = 20 and 5*2 + 2 = 12)


@pytest.fixture(scope="module")
def gd_sweep():
    """One vmapped sweep (seed x lr) carrying every observable tested on it, the run
    (seed 1, lr 0.2) alone, and the spec. iterations = 32 = P (20 for a block of <= 20)
    covers the whole Krylov space; Hutch++ with 3 * 20 products sketches all of a block of
    <= 20 parameters, so its trace is exact (to rounding)."""
    observables = (
        curvature.BlockSharpness(iterations=20),
        curvature.BlockTopEigenvalues(k=3, iterations=20),
        curvature.BlockHessianTrace(samples=60, method="hutch++"),
        curvature.BlockSpectralDensity(lo=-0.5, hi=1.5, points=11, sigma=0.1, probes=1,
                                       iterations=8),
        curvature.Sharpness(iterations=32),
        curvature.PreconditionedSharpness(iterations=32),
        curvature.GradientInTopSubspace(k=2, iterations=32),
        curvature.TopSubspaceOverlap(k=2, iterations=32),
    )
    with jax.enable_x64(True):
        spec = make_spec(observables)
        ds, states = sweep(spec)
        alone = td.run(dataclasses.replace(spec, strategy="loop"), seed=1, lr=0.2)
    return spec, ds, states, alone


def final_runs(spec, ds, states):
    """``(final params, final log point of the Dataset, dense Hessian)`` of every run."""
    loss = training_loss(spec)
    for i in range(len(SWEEP["seed"])):
        for j in range(len(SWEEP["lr"])):
            params = final_state(states, i, j).params
            yield params, ds.isel(seed=i, lr=j, step=-1), dense_hessian(loss, params)


def test_block_eigenvalues_and_traces_in_a_vmapped_sweep_equal_the_dense_blocks(gd_sweep):
    spec, ds, states, _ = gd_sweep
    assert ds.block_top_eigenvalues.dims == ("seed", "lr", "step", "block", "eigen_index")
    assert list(ds.block.values) == list(NAMES)  # default: every layer
    assert "parameter block" in ds.block_sharpness.attrs["long_name"]
    assert "θ_B" in ds.block_hessian_trace.attrs["definition"]
    worst = 0.0
    for params, final, h in final_runs(spec, ds, states):
        for b, name in enumerate(NAMES):
            idx = block_slice(params, name)
            exact = np.linalg.eigvalsh(h[np.ix_(idx, idx)])[::-1]
            top = final.block_top_eigenvalues.isel(block=b).values
            np.testing.assert_allclose(top, exact[:3], rtol=RTOL)
            np.testing.assert_allclose(final.block_sharpness.isel(block=b), exact[0],
                                       rtol=RTOL)
            np.testing.assert_allclose(final.block_hessian_trace.isel(block=b),
                                       np.trace(h[np.ix_(idx, idx)]), rtol=RTOL)
            worst = max(worst, np.max(np.abs(top - exact[:3]) / np.abs(exact[:3])))
        # the layers partition the parameters: their traces add up to the Hessian's
        np.testing.assert_allclose(final.block_hessian_trace.sum(), np.trace(h), rtol=RTOL)
    print(f"worst relative error of a block's top-3 eigenvalues vs eigh: {worst:.1e}")


def test_gd_observables_in_the_sweep_equal_the_run_alone(gd_sweep):
    # batched and unbatched products differ in the last bits only: 1e-9 relative is far
    # above float64 rounding and far below any value here
    _, ds, _, alone = gd_sweep
    for name in ("block_sharpness", "block_top_eigenvalues", "block_hessian_trace",
                 "block_spectral_density", "preconditioned_sharpness",
                 "top_subspace_gradient_fraction", "top_subspace_overlap"):
        np.testing.assert_allclose(alone[name].values, ds[name].sel(seed=1, lr=0.2).values,
                                   rtol=1e-9, atol=1e-12)


def test_blocks_of_a_context_against_the_dense_blocks():
    """Spectral density, a block smaller than k and Hutchinson's trace, on the Context of
    one run: the same quadrature from the same probes of the dense block (rounding
    only), NaN eigenvalues beyond a 2-parameter block, a trace within its stderr."""
    spec = make_spec(())
    params = init_params(spec, 3)
    key = jax.random.PRNGKey(7)
    names = ("1", "1/b")
    h = dense_hessian(training_loss(spec), params)
    observables = (
        curvature.BlockSpectralDensity(blocks=names, lo=-0.5, hi=1.5, points=41, sigma=0.05,
                                       probes=2, iterations=10),
        curvature.BlockTopEigenvalues(blocks=names, k=3, iterations=12),
        curvature.BlockHessianTrace(blocks=names, samples=30),
    )
    got, top, traces = measure(spec, lambda ctx: [o(ctx) for o in observables])(params, key)
    grid = np.linspace(-0.5, 1.5, 41)
    for b, name in enumerate(names):
        idx = block_slice(params, name)
        hb = jnp.asarray(h[np.ix_(idx, idx)])
        want = density.spectral_density(lambda v: hb @ v, jnp.zeros(idx.size),  # noqa: B023
                                        jax.random.fold_in(key, b), grid, 0.05,
                                        probes=2, order=10)
        np.testing.assert_allclose(got["block_spectral_density"][b], want, rtol=1e-8,
                                   atol=1e-10)
        exact = np.linalg.eigvalsh(hb)[::-1]
        m = min(3, idx.size)
        np.testing.assert_allclose(top["block_top_eigenvalues"][b][:m], exact[:m], rtol=RTOL)
        assert np.all(np.isnan(top["block_top_eigenvalues"][b][m:]))
        # the mean of 30 probes: 4 standard errors fails with probability < 1e-3
        err = abs(traces["block_hessian_trace"][b] - np.trace(hb))
        assert err < 4 * traces["block_hessian_trace_stderr"][b]


def test_unknown_blocks_and_clashing_coordinates_are_refused():
    with pytest.raises(ValueError, match=r"unknown parameter block '2'.*\['0', '0/b'"):
        make_spec((curvature.BlockSharpness(blocks=("0", "2")),))
    with pytest.raises(ValueError, match="blocks must be block names"):
        curvature.BlockSharpness(blocks=(0,))
    with pytest.raises(ValueError, match="blocks must be distinct"):
        make_spec((curvature.BlockSharpness(blocks=("0", "0")),))
    with pytest.raises(ValueError, match="dimension 'block' with different coordinates"):
        make_spec((curvature.BlockSharpness(), curvature.BlockHessianTrace(blocks="1/w")))
    with pytest.raises(ValueError, match="dimension 'eigenvalue' with different coordinates"):
        make_spec((curvature.SpectralDensity(points=5), curvature.SpectralDensity(points=7)))


# -- preconditioned sharpness ------------------------------------------------------------


def adam_preconditioner_of(opt_state, b2=0.999, eps=1e-8):
    """P = sqrt(nu / (1 - b2^t)) + eps from optax's ScaleByAdamState, written out
    (Cohen et al. 2022, Sec. 2), flat."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(
        s, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]
    assert len(found) == 1
    count, nu = found[0].count, ravel_pytree(found[0].nu)[0]
    return np.sqrt(np.asarray(nu) / (1 - b2 ** int(count))) + eps


def test_preconditioned_sharpness_of_adam_equals_eigh_of_the_dense_preconditioned_hessian():
    # iterations = 32 = P: the whole Krylov space, exact to rounding (see RTOL)
    spec = make_spec((curvature.PreconditionedSharpness(iterations=32),),
                     optimizer=td.optimizers.adam(0.01))
    ds, states = sweep(spec)
    worst = 0.0
    for i in range(2):
        for j in range(2):
            state = final_state(states, i, j)
            # the ntk parametrization's Adam learning-rate multipliers c scale the update
            # to lr c P^-1 m: the preconditioner the run sees is P / c
            mult = spec.model.lr_multipliers(state.params, family="adam")
            c = ravel_pytree(jax.tree.map(lambda m, a: np.full(a.shape, m), mult,
                                          state.params))[0]
            assert np.ptp(np.asarray(c)) > 0  # not all 1: the division is tested
            p = adam_preconditioner_of(state.opt_state) / np.asarray(c)
            s = 1 / np.sqrt(p)
            h = dense_hessian(training_loss(spec), state.params)
            exact = np.linalg.eigvalsh(s[:, None] * h * s[None, :])[-1]
            # = the top eigenvalue of P^-1 H (similar matrices)
            np.testing.assert_allclose(np.max(np.linalg.eigvals(h / p[:, None]).real), exact,
                                       rtol=1e-8)
            final = ds.isel(seed=i, lr=j, step=-1)
            np.testing.assert_allclose(final.preconditioned_sharpness, exact, rtol=RTOL)
            worst = max(worst, abs(float(final.preconditioned_sharpness) - exact) / exact)
            # Adam's P / c is far below 1 here: the preconditioned sharpness is the larger
            # (measured at least 5.7 times the sharpness)
            assert final.preconditioned_sharpness > 3 * np.linalg.eigvalsh(h)[-1]
    print(f"worst relative error of the preconditioned sharpness vs eigh: {worst:.1e}")
    assert_alone_equals_sweep(spec, ds, ["preconditioned_sharpness"])


def test_preconditioned_sharpness_of_sgd_is_the_sharpness_and_lion_is_refused(gd_sweep):
    _, ds, _, _ = gd_sweep
    # P = I: the same products from the same start vector, bit for bit
    np.testing.assert_array_equal(ds.preconditioned_sharpness.values, ds.sharpness.values)
    lion = make_spec((curvature.PreconditionedSharpness(),), steps=LOG_EVERY,
                     optimizer=td.optimizers.from_optax(optax.lion, learning_rate=1e-3))
    with pytest.raises(ValueError, match=r"PreconditionedSharpness needs.*'optax.lion'"):
        td.run(lion)

    def descent(learning_rate):  # a user's factory: its family is unknown
        return optax.sgd(learning_rate)

    with pytest.raises(ValueError, match="family=None.*declare it"):
        make_spec((curvature.PreconditionedSharpness(),),
                  optimizer=td.optimizers.from_optax(descent, learning_rate=0.1))


# -- the top subspace ------------------------------------------------------------------


def dense_top(spec, params, k):
    """``(top-k eigenvectors as columns, the gap lambda_k - lambda_(k+1))`` of the dense
    Hessian."""
    values, vectors = np.linalg.eigh(dense_hessian(training_loss(spec), params))
    return vectors[:, ::-1][:, :k], values[::-1][k - 1] - values[::-1][k]


def test_gradient_fraction_in_a_vmapped_sweep_equals_the_dense_projector(gd_sweep):
    # k = 2 (the outputs); iterations = 32 = P, the whole Krylov space. The Ritz vectors
    # then span the top eigenspace to rounding over the gap (~1e-15 / 1e-2 here), so the
    # fraction agrees with the dense projector to 1e-8 relative.
    spec, ds, states, _ = gd_sweep
    loss = training_loss(spec)
    for params, final, _ in final_runs(spec, ds, states):
        v, gap = dense_top(spec, params, 2)
        assert gap > 1e-3
        g = np.asarray(ravel_pytree(jax.grad(loss)(params))[0])
        exact = np.sum((v.T @ g) ** 2) / np.sum(g**2)
        np.testing.assert_allclose(final.top_subspace_gradient_fraction, exact, rtol=RTOL)


def test_top_subspace_overlap_between_log_points_equals_dense(gd_sweep):
    spec = make_spec((curvature.TopSubspaceOverlap(k=2, iterations=32),))
    obs = spec.observables[0]
    a, b = init_params(spec, 0), init_params(spec, 1)
    # the second point: a small step from the first, so that the subspaces overlap
    b = jax.tree.map(lambda x, y: x + 0.1 * y, a, b)
    update = measure(spec, obs.update)
    state = obs.init(context(spec, a, jax.random.PRNGKey(0)))
    first, state = update(a, jax.random.PRNGKey(1), state)
    assert np.isnan(first["top_subspace_overlap"])
    second, _ = update(b, jax.random.PRNGKey(2), state)
    (va, gap_a), (vb, gap_b) = dense_top(spec, a, 2), dense_top(spec, b, 2)
    assert min(gap_a, gap_b) > 1e-3
    exact = np.sum((va.T @ vb) ** 2) / 2
    assert 0.05 < exact < 0.999  # neither trivial case
    np.testing.assert_allclose(second["top_subspace_overlap"], exact, rtol=RTOL)
    # in the sweep: NaN at log point 0, in [0, 1] after
    overlap = gd_sweep[1].top_subspace_overlap.values
    assert np.all(np.isnan(overlap[..., 0]))
    assert np.all((overlap[..., 1:] >= 0) & (overlap[..., 1:] <= 1 + 1e-12))


def test_warm_started_lanczos_converges_to_the_top_subspace_with_few_iterations():
    # The same Hessian at 4 log points: warm-started from the carried Ritz vectors, 6
    # Lanczos steps a log point refine the top-2 eigenspace (a restarted Lanczos), while a
    # cold start of 6 steps stays as far from it as at the first log point. Measured here:
    # 1 - overlap with eigh's subspace: warm ~1e-8, cold ~2e-2 (bounds 100 and 20 times away).
    spec = make_spec(())
    params = init_params(spec, 0)
    exact, _ = dense_top(spec, params, 2)
    error = {}
    for warm in (True, False):
        obs = curvature.TopSubspaceOverlap(k=2, iterations=6, warm_start=warm)
        update = measure(spec, obs.update)
        state = obs.init(context(spec, params, jax.random.PRNGKey(0)))
        for step in range(4):
            _, state = update(params, jax.random.PRNGKey(step), state)
        error[warm] = 1 - np.sum((np.asarray(state[0]) @ exact) ** 2) / 2
    print(f"1 - overlap with the dense top-2 eigenspace: warm {error[True]:.1e}, "
          f"cold {error[False]:.1e}")
    assert error[True] < 1e-6 and error[False] > 1e-3


def test_block_kernels_decompose_the_ntk_as_dense_jacobians_do():
    from traindyn import kernels

    task = td.tasks.teacher_student_linear(dim=5, n_train=12, n_test=4, out_dim=2, seed=1)
    model = td.MLP(width=6, depth=2, out_dim=2, activation="tanh")
    obs = kernels.BlockKernels(probe_size=8)
    spec = td.Spec(model, task, td.optimizers.sgd(0.1), steps=4, log_every=2,
                   observables=("loss", obs), dtype="float64")
    with jax.enable_x64(True):
        ds, states = td.sweep(spec, seed=[0, 1], return_state=True)
        assert list(ds.block.values) == ["0", "1", "2"]
        for i in range(2):
            params = jax.tree.map(lambda a: a[i], states[()].params)
            x = jnp.asarray(task.x_train[:8])
            # dense Jacobian of the outputs (n, O) in every leaf, layer by layer
            jac = jax.jacrev(lambda p: model.apply(p, x))(params)
            total = 0.0
            for l, name in enumerate(["0", "1", "2"]):
                j = np.concatenate([np.asarray(a).reshape(8, 2, -1)
                                    for a in jax.tree.leaves(jac[l])], axis=-1)
                k_block = np.einsum("iap,jap->ij", j, j) / 2   # traced over the 2 outputs
                total += np.trace(k_block) / 8
                # the same float64 products in another order: 1e-10 relative
                np.testing.assert_allclose(
                    ds.block_ntk_trace.isel(seed=i).sel(step=4, block=name),
                    np.trace(k_block) / 8, rtol=1e-10)
            # the blocks of a partition add up to the whole kernel's trace
            np.testing.assert_allclose(ds.block_ntk_trace.isel(seed=i).sel(step=4).sum(),
                                       total, rtol=1e-10)
    # at step 0 the kernel is its own initial value: 1 - cos = 0 up to float64 rounding
    np.testing.assert_allclose(ds.block_kernel_distance.sel(step=0), 0.0, atol=1e-15)
    assert (ds.block_kernel_distance.sel(step=4) > 1e-12).all()
    with pytest.raises(ValueError, match="unknown parameter block 'nope'"):
        td.Spec(model, task, td.optimizers.sgd(0.1),
                observables=(kernels.BlockKernels(probe_size=8, blocks=("nope",)),))
