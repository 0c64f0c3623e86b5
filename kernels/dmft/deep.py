r"""Deep networks: the self-consistent DMFT by alternating updates of the order parameters.

Order parameters live on the grid of ``(t, mu)`` pairs, ``t = 0..T`` GD steps, ``mu`` over
all examples (``N_g = (T+1) n`` points), as ``N_g x N_g`` matrices indexed time-major.
One iteration (``kernels.dmft``, B&P 2022 Sec. 5) maps ``(Phi, G, A, B, f)`` to new ones:

1. ``Delta(s) = (2/P)(y - f(s))`` on the training examples, 0 on test examples;
2. per hidden layer ``l``, the memory kernels ``M_h = gamma sigma^2 (A^{l-1} +
   eta Phi^{l-1} Delta [s<t])`` and ``M_z = gamma sigma^2 (B^l + eta G^{l+1} Delta [s<t])``;
3. per layer, the fields ``h = u + M_h g``, ``z = r + M_z phi(h)``, ``g = phi'(h) z``, with
   ``u ~ GP(0, sigma^2 Phi^{l-1})``, ``r ~ GP(0, sigma^2 G^{l+1})``:

   * ``deep_linear`` (``phi(h) = h``): in closed form, ``h = H (u + M_h r)`` with
     ``H = (I - M_h M_z)^{-1}``, hence (B&P eq. 11-12 in this discrete form)
     ``Phi^l = H sigma^2 (Phi^{l-1} + M_h G^{l+1} M_h^T) H^T``,
     ``G^l = (I + M_z H M_h) sigma^2 G^{l+1} (.)^T + M_z H sigma^2 Phi^{l-1} (M_z H)^T``,
     ``A^l = H M_h / gamma``, ``B^{l-1} = M_z H / gamma``;
   * ``monte_carlo``: ``S`` samples of ``(u, r)`` drawn from fixed whitened noise
     (``u = L eps`` with ``L`` the Cholesky factor of ``sigma^2 Phi^{l-1}``, causal in
     time; the same ``eps`` every iteration, so the
     iteration is a deterministic map whose fixed point carries an ``O(S^{-1/2})`` error),
     the causal equations solved step by step for each sample, ``Phi^l``, ``G^l`` their
     sample averages and ``A^l``, ``B^{l-1}`` the sample averages of the Jacobians
     ``d phi(h^l) / d r^l`` and ``d g^l / d u^l`` (divided by ``gamma``; B&P eq. 8),
     exact, by a recursive forward substitution in time with the samples in the wide
     dimension of the products (``_causal_response_sums``);
4. the output ``f = sigma^2 <d phi(h^L)/d rho>/gamma + eta sigma^2 (Phi^L Delta [s<t]) 1``;
5. a damped update ``Q <- Q + beta (Q_new - Q)`` of every order parameter.

The iteration stops when the largest relative change (Frobenius norm, over ``Phi``,
``G``, ``A``, ``B``, ``f``) is below ``tol``. It starts from the ``gamma = 0`` solution
(static kernels from the dual activations, NTK dynamics of ``f``) or from a given state
(e.g. the solution at a smaller ``gamma0``: warm start).

Cost per iteration: ``deep_linear`` ``O(L N_g^3)``; ``monte_carlo`` ``O(S N_g^2)`` per
layer for the fields plus, for each of the ``2L - 2`` Jacobians, about ``(1/2) S N_g^3``
multiply-adds (two memory kernels, each a lower triangle against the causal, lower
triangular tangents; the recursion's products reach ``N_g^3/4`` each, against
``N_g^3/6`` for the exact triangles): the responses dominate. ``jax.jacfwd`` through the
per-sample scan (kept as ``_jacfwd_response_sums``, the reference of the tests and the
benchmark) costs ``2 S N_g^3`` for each (four times the flops) and copies the tangent
history at every step.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from kernels import activation_duals
from kernels.dmft.common import activation_pair, causal_root, psd_sqrt, relative_change


# the tolerance of every window but the last (``run``): a new window's first change is
# 0.4-0.8 (its rows start at zero), so converging the earlier rows far below it only
# improves the start of an iteration the last window makes anyway. Measured (L = 3,
# P = 10, T = 20, S = 200, tol = 1e-6): 143 iterations with every window to 1e-6, 52 with
# 1e-3, 36 with 1e-2, the three answers within 8e-7 of each other
WINDOW_TOL = 1e-2

# the grid points a window's own grid is rounded up to a multiple of (``window_sizes``):
# every distinct size is one more compile, so the sizes are few. Measured in one solve at
# L = 3, P = 10, T = 100, S = 1000 (float64, 2-core CPU): grids of 20 / 40 / 60 / 80
# steps compiled in about 25 / 33 / 58 / 67 s, and an iteration on them took 0.2-2.3 /
# 7-15 / 15-25 / 37-59 s, growing with the window's horizon; on the whole grid (101
# steps, compiled in about 90 s) 79-84 s at a horizon of 84, where the solve ran every
# window before it had grids of their own. Grids under 200 points compile for longer
# than their iterations take, so there is one size below that.
SIZE_QUANTUM_POINTS = 200

# grid rows (steps x examples) per block, the leaves of the recursion of the causal
# responses: one iteration at L = 3, P = 10, T = 20, S = 1000 on an idle 2-core CPU took
# 1.21 / 1.15 / 1.12 / 1.17 s with blocks of 2 / 4 / 6 / 8 steps (one step: 1.32 s)
_BLOCK_ROWS = 40


def grid_matrix(k_static, t1):
    """A static ``n x n`` kernel on the ``(t, mu)`` grid: ``K[(t,mu),(s,nu)] = k[mu,nu]``."""
    return jnp.kron(jnp.ones((t1, t1), k_static.dtype), k_static)


def strict_causal(t1, n, dtype):
    """``[s < t]`` on the grid."""
    return jnp.kron(jnp.tril(jnp.ones((t1, t1), dtype), -1), jnp.ones((n, n), dtype))


def static_kernels(problem, dtype):
    """``Phi^l``, ``G^l`` (``l = 1..L``) at ``gamma = 0``, exact from the dual activation
    (``kernels.activation_duals``): ``Phi^l = k(sigma^2 Phi^{l-1})``,
    ``G^l = sigma^2 kdot(sigma^2 Phi^{l-1}) G^{l+1}``, ``G^{L+1} = 1``."""
    p = problem
    dual = activation_duals.get(p.activation)
    s2 = p.sigma**2
    phi = [jnp.asarray(p.phi0, dtype)]
    kdots = []
    for _ in range(p.depth):
        c = s2 * phi[-1]
        q = jnp.diag(c)
        k, kdot = dual(q[:, None], q[None, :], c)
        # quadrature duals (tanh, gelu) are symmetric only to ~1e-5: symmetrise, as
        # kernels.predict does with the NTK
        phi.append((k + k.T) / 2)
        kdots.append((kdot + kdot.T) / 2)
    g = [jnp.ones_like(phi[0])]
    for kdot in reversed(kdots):
        g.insert(0, s2 * kdot * g[0])
    return phi[1:], g[:-1]  # Phi^1..Phi^L, G^1..G^L


def ntk_outputs(problem, phi_static, g_static, dtype):
    """``f(t)`` under the static NTK ``K = sigma^2 sum_l G^{l+1} Phi^l`` on every example:
    ``f(t+1) = f(t) + eta K[:, train] Delta(t)`` (the ``gamma -> 0`` limit; exact GD of the
    linearised network)."""
    p = problem
    s2 = p.sigma**2
    phis = [jnp.asarray(p.phi0, dtype)] + list(phi_static)
    gs = list(g_static) + [jnp.ones_like(phis[0])]
    k = s2 * sum(g * ph for g, ph in zip(gs, phis))
    y = jnp.zeros(p.n, dtype).at[: p.n_train].set(jnp.asarray(p.y, dtype))
    return _ntk_scan(k, y, jnp.asarray(p.train_mask, dtype), p.eta, p.n_train,
                     steps=p.steps)


@functools.partial(jax.jit, static_argnames=("steps",))
def _ntk_scan(k, y, mask, eta, n_train, *, steps):
    """The recursion of ``ntk_outputs``: one compile per shape, ``eta`` traced."""
    def step(f, _):
        delta = (2.0 / n_train) * (y - f) * mask
        return f + eta * k @ delta, f

    _, f = jax.lax.scan(step, jnp.zeros_like(y), None, length=steps + 1)
    return f


def initial_state(problem, dtype):
    """The ``gamma = 0`` solution on the grid: static kernels, no responses, NTK outputs."""
    p = problem
    t1, n, L = p.steps + 1, p.n, p.depth
    phi_s, g_s = static_kernels(p, dtype)
    zeros = jnp.zeros((max(L - 1, 0), t1 * n, t1 * n), dtype)
    return {"phi": jnp.stack([grid_matrix(k, t1) for k in phi_s]),
            "g": jnp.stack([grid_matrix(k, t1) for k in g_s]),
            "a": zeros, "b": zeros,
            "f": ntk_outputs(p, phi_s, g_s, dtype)}


def _layer_inputs(state, l, L, phi0_grid, ones_grid, dvec, causal, eta, s2):
    """``M_h / gamma``, ``M_z / gamma`` and the drives' covariances for hidden layer ``l``."""
    phi_below = phi0_grid if l == 1 else state["phi"][l - 2]
    a_below = 0.0 if l == 1 else state["a"][l - 2]
    g_above = ones_grid if l == L else state["g"][l]
    b_here = 0.0 if l == L else state["b"][l - 1]
    mh = s2 * (a_below + eta * phi_below * dvec[None, :] * causal)
    mz = s2 * (b_here + eta * g_above * dvec[None, :] * causal)
    return mh, mz, s2 * phi_below, s2 * g_above


def _linear_layer(mh, mz, cov_u, cov_r, gamma):
    """Closed-form statistics of one linear layer (module doc, 3)."""
    eye = jnp.eye(mh.shape[0], dtype=mh.dtype)
    h_op = jnp.linalg.solve(eye - gamma**2 * mh @ mz, eye)  # H
    hm = h_op @ mh  # H M_h / gamma = A^l
    mzh = mz @ h_op  # M_z H / gamma = B^{l-1}
    phi = h_op @ cov_u @ h_op.T + gamma**2 * hm @ cov_r @ hm.T
    z_r = eye + gamma**2 * mz @ hm
    g = z_r @ cov_r @ z_r.T + gamma**2 * mzh @ cov_u @ mzh.T
    rho_response = hm @ jnp.ones(mh.shape[0], mh.dtype)  # <dh/d rho>/gamma, r = rho 1
    return phi, g, hm, mzh, rho_response


def _sample_solver(activation, t1, n):
    phi_fn, dphi_fn = activation_pair(activation)

    def solve_one(u, r, mh, mz):
        """Fields of one sample: ``u``, ``r`` of shape ``(T+1, n)``; ``mh``, ``mz`` the
        memory kernels (times ``gamma``) as ``(T+1, n, N_g)``. Returns ``phi(h)``, ``g``,
        ``h`` and ``z``, each raveled time-major ``(N_g,)``."""
        def step(carry, t):
            hist_phi, hist_g = carry
            h = u[t] + mh[t] @ hist_g.ravel()
            phi = phi_fn(h)
            hist_phi = hist_phi.at[t].set(phi)
            z = r[t] + mz[t] @ hist_phi.ravel()
            hist_g = hist_g.at[t].set(dphi_fn(h) * z)
            return (hist_phi, hist_g), (h, z)

        zeros = jnp.zeros((t1, n), u.dtype)
        (hist_phi, hist_g), (h, z) = jax.lax.scan(step, (zeros, zeros), jnp.arange(t1))
        return hist_phi.ravel(), hist_g.ravel(), h.ravel(), z.ravel()

    return solve_one


def _causal_response_sums(h, z, mh, mz, kinds, *, activation, t1, n, block,
                          horizon=None, weights=None):
    r"""Sums over samples of the Jacobians ``d g / d u`` (kind ``"u"``) and
    ``d phi(h) / d r`` (kind ``"r"``) of the causal fields of one layer, by a recursive
    forward substitution in time (B&P 2022 eq. 8, the response functions ``A``, ``B``).

    ``h``, ``z`` ``(N_g, B)``: the fields of ``B`` samples (rows time-major); ``mh``,
    ``mz`` ``(N_g, N_g)``: the memory kernels times ``gamma``. The tangent of the
    discrete single-site equations (module doc, 3) is, with ``D_1 = phi'(h)`` and
    ``D_2 = phi''(h) z`` per sample,

    .. math::

        \delta h(t) = \delta u(t) + \sum_{s<t} M_h(t,s)\,\delta g(s),\quad
        \delta\phi(t) = D_1(t)\,\delta h(t),\\
        \delta z(t) = \delta r(t) + \sum_{s\le t} M_z(t,s)\,\delta\phi(s),\quad
        \delta g(t) = D_2(t)\,\delta h(t) + D_1(t)\,\delta z(t),

    for every unit tangent ``delta u`` or ``delta r`` at a grid point ``(s', nu)`` at once
    (the columns). It is causal: a tangent started at ``s'`` is zero before ``s'``, so
    the rows of time ``t`` have non-zero columns ``s' <= t`` only, and only the lower
    triangles of ``M_h`` (strict) and ``M_z`` are read, as in the per-sample scan.

    Time is cut into blocks of ``block`` steps, and the blocks are solved by halving, as
    a recursive triangular solve is (Elmroth, Gustavson, Jonsson & Kagstrom 2004, SIAM
    Review 46(1)): the first half of a range is solved, its tangents reach the
    second half's rows through one matrix product per kernel whose wide dimension is
    (samples x kinds x the columns the first half can reach), then the second half is
    solved. Most of the work is in the few large products near the top of the recursion,
    and the products skip the columns that causality makes zero in the solved half (those
    it started). Within a block the steps are solved in turn. Exact: the same sums as
    ``jax.jacfwd`` through the scan, in another order (round-off). With ``horizon``
    (traced: one compile for every window of the causal continuation) a second half that
    starts at or after it is not solved: every block that starts at or after the horizon
    is returned as zeros. ``weights`` ``(B,)``: the samples' weights in the sums (0 for
    padding; default 1), as the unit tangents' sizes. Returns ``{kind: (N_g, N_g)}``."""
    _, dphi_fn = activation_pair(activation)
    ng, samples = h.shape
    k = len(kinds)
    dtype = h.dtype
    d1 = dphi_fn(h).reshape(ng, samples, 1, 1)
    d2 = (jax.jvp(dphi_fn, (h,), (jnp.ones_like(h),))[1] * z).reshape(ng, samples, 1, 1)
    unit = jnp.eye(n, dtype=dtype)[:, None, :]  # (rows, samples, columns) of one step
    if weights is not None:  # the tangents are linear in the unit inputs: weighted sums
        unit = unit * weights[None, :, None]

    def product(m, x):  # (rows, q) @ (q, samples, kinds, columns)
        return jnp.einsum("iq,qbkc->ibkc", m, x)

    def widen(x, cols):  # zero columns up to ``cols``
        return jnp.pad(x, [(0, 0)] * 3 + [(0, cols - x.shape[3])])

    def sums_of(phi, g):  # {kind: (rows, columns)}, summed over the samples
        return {kind: (g if kind == "u" else phi)[:, :, kinds.index(kind)].sum(1)
                for kind in kinds}

    def solve_block(a, e, pre_h, pre_z):
        """Tangents ``(phi, g)`` of the rows of steps ``a <= t < e`` (columns ``< e n``)
        from the contributions ``pre_h``, ``pre_z`` of all earlier rows (None: zero; they
        may have fewer columns, the rest being zero)."""
        shape = (n, samples, k, e * n)
        phis, gs = [], []
        for t in range(a, e):
            rows, local = slice(t * n, (t + 1) * n), (t - a) * n
            dh, dz = (jnp.zeros(shape, dtype) if pre is None
                      else widen(pre[local:local + n], e * n) for pre in (pre_h, pre_z))
            # the unit tangents started at step t: delta u enters h, delta r enters z
            if "u" in kinds:
                dh = dh.at[:, :, kinds.index("u"), rows].add(unit)
            if "r" in kinds:
                dz = dz.at[:, :, kinds.index("r"), rows].add(unit)
            if gs:  # the block's earlier steps (M_h is strictly causal)
                dh = dh + product(mh[rows, a * n:t * n], jnp.concatenate(gs))
            dphi = d1[rows] * dh
            dz = dz + product(mz[rows, a * n:(t + 1) * n], jnp.concatenate(phis + [dphi]))
            phis.append(dphi)
            gs.append(d2[rows] * dh + d1[rows] * dz)
        return jnp.concatenate(phis), jnp.concatenate(gs)

    def solve_range(lo, hi, pre_h, pre_z, tangents):
        """Blocks ``lo <= b < hi`` from the contributions of all earlier rows (None: zero):
        their response sums ``{kind: (rows, columns up to the range's end)}`` and, when
        ``tangents`` (a later range reads them), their tangents ``(phi, g)``."""
        a, e = lo * block, min(hi * block, t1)
        if hi - lo == 1:
            phi, g = solve_block(a, e, pre_h, pre_z)
            return sums_of(phi, g), ((phi, g) if tangents else None)
        mid = (lo + hi) // 2
        m = mid * block
        first = (m - a) * n  # rows of the first half, which reach columns < m n only

        def cut(pre):
            return None if pre is None else pre[:first, :, :, :m * n]

        sums1, (phi1, g1) = solve_range(lo, mid, cut(pre_h), cut(pre_z), True)

        def second(phi1, g1, pre_h, pre_z):
            later = slice(m * n, e * n)
            pre = []
            for pre_x, mat, x in ((pre_h, mh, g1), (pre_z, mz, phi1)):
                add = product(mat[later, a * n:m * n], x)  # columns < m n
                pre.append(add if pre_x is None else widen(pre_x[first:], m * n) + add)
            return solve_range(mid, hi, *pre, tangents)

        if horizon is None:
            sums2, tan2 = second(phi1, g1, pre_h, pre_z)
        else:  # a second half that starts at or after the horizon is left at zero
            def skip(*args):
                return jax.tree_util.tree_map(lambda sd: jnp.zeros(sd.shape, sd.dtype),
                                              jax.eval_shape(second, *args))

            sums2, tan2 = jax.lax.cond(m < horizon, second, skip, phi1, g1, pre_h, pre_z)
        cols = e * n
        sums = {kind: jnp.concatenate([jnp.pad(sums1[kind], [(0, 0), (0, cols - m * n)]),
                                       sums2[kind]]) for kind in kinds}
        if not tangents:
            return sums, None
        return sums, tuple(jnp.concatenate([widen(x1, cols), x2])
                           for x1, x2 in zip((phi1, g1), tan2))

    return solve_range(0, -(-t1 // block), None, None, False)[0]


def _jacfwd_response_sums(fields, u, r, kinds, weights):
    """The reference for ``_causal_response_sums``: dense ``jax.jacfwd`` through the
    per-sample scan, summed over the samples of ``u``, ``r`` ``(B, N_g)`` with
    ``weights`` ``(B,)`` (a tangent per grid point carried through all ``T+1`` steps;
    about ``6x`` the flops)."""
    argnums = tuple(("u", "r").index(kind) for kind in kinds)

    def one(u_, r_):
        jac = jax.jacfwd(lambda a, b: fields(a, b)[:2], argnums=argnums)(u_, r_)
        # jac[output][argnum]: d phi/d r for kind r, d g/d u for kind u
        return {kind: jac[1 if kind == "u" else 0][i] for i, kind in enumerate(kinds)}

    return jax.tree_util.tree_map(lambda x: jnp.einsum("bij,b->ij", x, weights),
                                  jax.vmap(one)(u, r))


def _mc_layer(eps_u, eps_r, eps_rho, mh, mz, cov_u, cov_r, *, l, L, gamma, sigma,
              activation, t1, n, batch, responses="causal", horizon=None):
    """Monte Carlo statistics of hidden layer ``l``: sample means of ``phi phi^T``,
    ``g g^T``, ``d phi/d r``, ``d g/d u`` (both divided by ``gamma``) and
    ``d phi/d rho`` (module doc, 3; B&P 2022 eq. 7-8): the fields of all samples at
    once, the Jacobians over chunks of ``batch`` samples.
    ``responses``: ``"causal"`` (``_causal_response_sums``, solved up to ``horizon``)
    or ``"jacfwd"`` (its dense reference, on the whole grid)."""
    ng = t1 * n
    dtype = mh.dtype
    solve_one = _sample_solver(activation, t1, n)
    mh3 = (gamma * mh).reshape(t1, n, ng)
    mz3 = (gamma * mz).reshape(t1, n, ng)
    if l == 1:  # static drive u^1 = (sigma^2 Phi^0)^{1/2} eps, the same at every t
        root = psd_sqrt(cov_u[:n, :n])
        u_all = jnp.tile(eps_u[:, :n] @ root, (1, t1))
    else:
        u_all = eps_u @ causal_root(cov_u).T
    if l == L:  # static readout drive r^L = rho, rho ~ N(0, sigma^2)
        r_all = sigma * jnp.broadcast_to(eps_rho[:, None], (eps_rho.shape[0], ng))
    else:
        r_all = eps_r @ causal_root(cov_r).T
    kinds = tuple(kind for kind, wanted in (("u", l > 1), ("r", l < L)) if wanted)
    block = max(1, round(_BLOCK_ROWS / n))

    def fields(u, r):  # one sample, (N_g,) each
        return solve_one(u.reshape(t1, n), r.reshape(t1, n), mh3, mz3)

    phi, g, h, z = jax.vmap(fields)(u_all, r_all)  # (S, N_g) each
    total = {"phi": phi.T @ phi, "g": g.T @ g}
    if l == L:  # d phi / d rho: r^L = rho 1
        total["rho"] = jax.jvp(lambda r_: jax.vmap(fields)(u_all, r_)[0], (r_all,),
                               (jnp.ones_like(r_all),))[1].sum(0)

    def chunk(u, r, h, z, w):  # the responses summed over a chunk of samples (B, N_g)
        if responses == "jacfwd":
            return _jacfwd_response_sums(fields, u, r, kinds, w)
        return _causal_response_sums(h.T, z.T, mh3.reshape(ng, ng), mz3.reshape(ng, ng),
                                     kinds, activation=activation, t1=t1, n=n, block=block,
                                     horizon=horizon, weights=w)

    s = u_all.shape[0]
    if kinds:
        # the samples padded to whole chunks (copies of the first, weight 0): one compiled
        # chunk, where a remainder would compile the recursion a second time
        size = min(batch, s)
        chunks = -(-s // size)
        pad = chunks * size - s
        weights = jnp.concatenate([jnp.ones(s, dtype), jnp.zeros(pad, dtype)])
        per_sample = [jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad, ng))])
                      for x in (u_all, r_all, h, z)]
        sums = jax.lax.scan(
            lambda acc, x: (jax.tree_util.tree_map(jnp.add, acc, chunk(*x)), None),
            {kind: jnp.zeros((ng, ng), dtype) for kind in kinds},
            [x.reshape(chunks, size, ng) for x in per_sample]
            + [weights.reshape(chunks, size)])[0]
        if "r" in kinds:
            total["a"] = sums["r"]
        if "u" in kinds:
            total["b"] = sums["u"]
    mean = jax.tree_util.tree_map(lambda t: t / s, total)
    for key in ("a", "b", "rho"):
        if key in mean:
            mean[key] = mean[key] / gamma
    return mean


@functools.partial(jax.jit, static_argnames=("solver", "activation", "L", "t1", "n",
                                             "n_train", "batch", "responses"))
def iterate(state, noise, phi0, y, mask, horizon, *, solver, activation, L, t1, n, n_train, batch,
            sigma, gamma, eta, damping, responses="causal"):
    """One damped iteration; returns the new state and the relative change.
    ``responses`` (Monte Carlo): ``"causal"``, or ``"jacfwd"`` for the dense reference."""
    dtype = phi0.dtype
    s2 = sigma**2
    ng = t1 * n
    phi0_grid = grid_matrix(phi0, t1)
    ones_grid = jnp.ones((ng, ng), dtype)
    causal = strict_causal(t1, n, dtype)
    y_full = jnp.zeros(n, dtype).at[:n_train].set(y)
    live = (jnp.arange(t1) < horizon).astype(dtype)[:, None]  # training stops at horizon
    delta = (2.0 / n_train) * (y_full[None] - state["f"]) * mask[None] * live
    dvec = delta.ravel()
    new = {"phi": [], "g": [], "a": [None] * max(L - 1, 0), "b": [None] * max(L - 1, 0)}
    rho_response = None
    for l in range(1, L + 1):
        mh, mz, cov_u, cov_r = _layer_inputs(state, l, L, phi0_grid, ones_grid, dvec,
                                             causal, eta, s2)
        if solver == "deep_linear":
            phi, g, a, b, rho = _linear_layer(mh, mz, cov_u, cov_r, gamma)
            stats = {"phi": phi, "g": g, "a": a, "b": b, "rho": rho}
        else:
            stats = _mc_layer(noise["u"][l - 1], noise["r"][l - 1], noise["rho"], mh, mz,
                              cov_u, cov_r, l=l, L=L, gamma=gamma, sigma=sigma,
                              activation=activation, t1=t1, n=n, batch=batch,
                              responses=responses, horizon=horizon)
        new["phi"].append(stats["phi"])
        new["g"].append(stats["g"])
        if l < L:
            new["a"][l - 1] = stats["a"]
        if l > 1:
            new["b"][l - 2] = stats["b"]
        if l == L:
            rho_response = stats["rho"]
    f_new = s2 * rho_response + s2 * eta * (new["phi"][-1] * causal) @ dvec
    empty = jnp.zeros((0, ng, ng), dtype)
    new_state = {"phi": jnp.stack(new["phi"]), "g": jnp.stack(new["g"]),
                 "a": jnp.stack(new["a"]) if L > 1 else empty,
                 "b": jnp.stack(new["b"]) if L > 1 else empty,
                 "f": f_new.reshape(t1, n)}
    change = relative_change({k: v for k, v in new_state.items() if v.size},
                             {k: v for k, v in state.items() if v.size})
    damped = jax.tree_util.tree_map(lambda o, nw: o + damping * (nw - o), state, new_state)
    return damped, change


def make_noise(key, problem, samples, dtype):
    """Whitened noise, fixed for the whole solve: ``u``, ``r`` ``(L, S, N_g)``, ``rho (S,)``."""
    ng = (problem.steps + 1) * problem.n
    ku, kr, kp = jax.random.split(key, 3)
    return {"u": jax.random.normal(ku, (problem.depth, samples, ng), dtype),
            "r": jax.random.normal(kr, (problem.depth, samples, ng), dtype),
            "rho": jax.random.normal(kp, (samples,), dtype)}


def half_noise(noise):
    s = noise["rho"].shape[0] // 2
    return {"u": noise["u"][:, :s], "r": noise["r"][:, :s], "rho": noise["rho"][:s]}


def iteration_arguments(problem, dtype, *, solver, damping, batch):
    """``(args, kw)`` such that ``iterate(state, noise, *args, horizon, **kw)`` is one
    iteration of ``problem``."""
    p = problem
    kw = dict(solver=solver, activation=p.activation, L=p.depth, t1=p.steps + 1, n=p.n,
              n_train=p.n_train, batch=batch, sigma=p.sigma, gamma=p.gamma, eta=p.eta,
              damping=damping)
    args = (jnp.asarray(p.phi0, dtype), jnp.asarray(p.y, dtype),
            jnp.asarray(p.train_mask, dtype))
    return args, kw


def window_bounds(t1, windows):
    """The horizon (in steps) of each of ``windows`` windows of the causal continuation."""
    return [int(np.ceil(t1 * (w + 1) / windows)) for w in range(windows)]


def window_sizes(t1, n, bounds, quantum_points=SIZE_QUANTUM_POINTS):
    """The static number of steps each window of the causal continuation is solved on:
    its horizon rounded up to a multiple of ``ceil(quantum_points / n)`` steps, or all
    ``t1`` steps when that leaves less than half a multiple out (one compile per
    distinct size; ``SIZE_QUANTUM_POINTS`` says why the multiple)."""
    q = max(1, -(-quantum_points // n))
    sizes = []
    for h in bounds:
        size = min(t1, -(-h // q) * q)
        sizes.append(t1 if 2 * (t1 - size) < q else size)
    return sizes


def _truncate(tree, size, n):
    """The order parameters (or the noise) of the first ``size`` steps: exact, as the
    equations at step ``t`` read steps ``<= t`` only and the causal drives' Cholesky factor
    on the first steps is the leading block of the whole one (``causal_root``)."""
    if tree is None:
        return None
    m = size * n
    out = {}
    for key, x in tree.items():
        if key == "f":
            out[key] = x[:size]
        elif key in ("u", "r"):  # noise (L, S, N_g)
            out[key] = x[..., :m]
        elif key == "rho":
            out[key] = x
        else:  # (L, N_g, N_g)
            out[key] = x[:, :m, :m]
    return out


def _extend(state, size, n):
    """``state``, solved on its first steps, continued to ``size`` steps as if its fields
    stopped moving after its last step: ``Phi``, ``G`` and ``f`` repeat that step's (a
    covariance of the continued fields, positive semi-definite like the ``gamma = 0``
    start, whose rows are all alike), the responses are zero beyond it."""
    old = state["f"].shape[0]
    if size == old:
        return state
    steps = np.minimum(np.arange(size), old - 1)
    grid = (steps[:, None] * n + np.arange(n)[None]).ravel()
    out = {"f": state["f"][steps]}
    for key in ("phi", "g"):
        out[key] = state[key][:, grid][:, :, grid]
    for key in ("a", "b"):
        x = state[key]
        out[key] = jnp.zeros(x.shape[:1] + (size * n, size * n), x.dtype).at[
            :, :old * n, :old * n].set(x)
    return out


def run(problem, state, noise, *, solver, dtype, damping, tol, max_iter, batch, windows=1,
        progress=None, quantum_points=SIZE_QUANTUM_POINTS):
    """Iterate to self-consistency. Returns ``(state, info)`` with ``iterations``,
    ``converged``, ``change`` (last), ``history`` of changes, ``sizes`` (the steps each
    window was solved on) and ``window_iterations``.

    Causal continuation: the equations at step ``t`` involve order parameters at steps
    ``<= t`` only, so the solution on ``[0, t_w]`` does not depend on later steps. With
    ``windows > 1`` training is first stopped at ``t_w = (T+1)/windows`` (``Delta = 0``
    after it, a benign continuation), iterated to ``max(tol, WINDOW_TOL)``, then ``t_w`` is
    extended by one window at a time; the last window is the full problem, iterated to
    ``tol``. Early iterations then never see a far-off, unstable guess of the late errors.
    The last window iterates every row again, so the answer is the fixed point of the
    whole problem to ``tol`` whatever the earlier windows' tolerance: they only make its
    start. Each window is solved on a grid of its own: the first ``window_sizes`` steps
    (its horizon rounded up), exact by causality (``_truncate``), so a window's
    iteration costs about ``(size/(T+1))^3`` of a full one; within it the responses are
    solved up to the horizon only (``_causal_response_sums``). A larger grid starts its
    new steps from the previous grid's last (``_extend``)."""
    p = problem
    args, kw = iteration_arguments(p, dtype, solver=solver, damping=damping, batch=batch)
    history = []
    converged = False
    t1, n = p.steps + 1, p.n
    bounds = window_bounds(t1, windows)
    sizes = window_sizes(t1, n, bounds, quantum_points)
    window_iterations = []
    # JAX's CPU LAPACK (the Cholesky factors of the drives) runs on the BLAS library's
    # threads, which spin-wait for each other: with another process on the cores that
    # stalled it by up to 100x, and one thread is fast whatever the load (XLA's own
    # products keep their threads).
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        for w, (horizon, size) in enumerate(zip(bounds, sizes)):
            last = w == len(bounds) - 1
            window_tol = tol if last else max(tol, WINDOW_TOL)
            converged = False
            # the first window takes the start's first steps; a larger grid continues the
            # last one's solution (``_extend``)
            state = _truncate(state, size, n) if w == 0 else _extend(state, size, n)
            sub_noise = _truncate(noise, size, n)
            while len(history) < max_iter:
                state, change = iterate(state, sub_noise, *args, horizon, **{**kw, "t1": size})
                change = float(change)
                history.append(change)
                if progress is not None:
                    progress(len(history), change)
                if not np.isfinite(change):
                    break
                if change < window_tol:
                    converged = last
                    break
            window_iterations.append(len(history) - sum(window_iterations))
            if not (history and np.isfinite(history[-1])):
                break
    state = _extend(state, t1, n)  # stopped early (max_iter, divergence) on a smaller grid
    return state, {"iterations": len(history), "converged": converged,
                   "change": history[-1] if history else float("nan"), "history": history,
                   "sizes": sizes, "window_iterations": window_iterations}


def equal_time(state, problem):
    """Equal-time ``Phi^l(t,t)``, ``G^l(t,t)`` as ``(T+1, L, n, n)``."""
    t1, n = problem.steps + 1, problem.n

    def diag_blocks(m):  # (L, N_g, N_g) -> (T+1, L, n, n)
        m5 = m.reshape(m.shape[0], t1, n, t1, n)
        idx = jnp.arange(t1)
        return m5[:, idx, :, idx, :]  # advanced indices first: (T+1, L, n, n)

    return diag_blocks(state["phi"]), diag_blocks(state["g"])

