r"""Criticality at initialisation: the kernel of a deep MLP stays put, explodes or vanishes
with depth, and its fluctuations over initialisations grow like depth / width
(Roberts, Yaida & Hanin 2022, *The Principles of Deep Learning Theory*, ch. 4-5;
arXiv:2106.10165); the self-normalising fixed point of SELU (Klambauer et al. 2017).

Finite networks (``dynamics.MLP``, ``ntk`` parametrization, no biases, so
``C_W = sigma_w^2``, ``C_b = 0``) are initialised for many seeds (``jax.lax.map`` over
chunks of a ``vmap``) and pushed one input ``x`` with ``|x|^2 / n_0 = 1``. At every layer
``l`` the *stochastic metric* ``G_hat^{(l)} = C_W (1/n) sum_j sigma(z_j^{(l-1)})^2`` (the
variance of ``z^{(l)}`` given the layer below; ``G_hat^{(1)} = C_W |x|^2 / n_0``) is
recorded per seed. Its mean over seeds is the kernel ``K^{(l)}`` (up to ``O(1/n)``) and
``n Var(G_hat^{(l)}) / K^2`` the normalised four-point vertex ``V^{(l)} / (K^{(l)})^2``
(book §4.3). Theory from ``kernels.criticality`` (the kernel and vertex recursions by
float64 quadrature; the exact finite-width ReLU law). Claims:

1. **ReLU at ``C_W = 2``** (book §5.2): the kernel is flat in depth (within 2% at
   every layer; the recursion is exactly flat), and ``V^{(l)} / K^2 = 5 (l - 1)``:
   a least-squares fit ``a (l - 1) + b (l - 1)^2`` of the measured normalised variance
   gives ``a`` (the book's leading-order constant 5; the quadratic term absorbs the
   ``O(l^2 / n)`` correction, whose exact form ``n((1 + 5/n)^{l-1} - 1)`` has a linear
   part ``-12.5 / n``). Also checked against that exact law layer by layer.
2. **Off criticality** (ReLU at ``C_W = 1.8, 2.2``): ``K^{(l)} = (C_W / 2)^{l-1} K^{(1)}``:
   the fitted exponential rate ``d log K / dl`` against ``log(C_W / 2)``.
3. **tanh at ``C_W = 1``** (book §5.3.3, the ``K* = 0`` class, ``a_1 = -2``):
   ``K^{(l)} ~ 1 / (2 l)`` (the recursion's ``l K^{(l)}`` at ``l = 1000``, and the
   networks' at their deepest layer within 10%); the normalised vertex grows like
   ``(2/3) l``: the measured slope over the deeper half of the layers against the
   leading-order recursion's slope there (which tends to 2/3).
4. **SELU** (Klambauer et al. 2017, Theorem 1): wide networks with LeCun-normal weights
   started from inputs whose mean and variance are away from ``(0, 1)`` return to it;
   the fitted per-layer contraction of ``|nu_l - 1|`` against the largest eigenvalue of
   the moment map's Jacobian at the fixed point (``0.7826``); the Jacobian's spectral norm
   is below 1 on a grid of their Theorem 1 domain.

Not measured: the NTK's fluctuations (book ch. 8-9).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import dynamics as td
from dynamics import activations
from dynamics.checks import check_int
from experiments.common import Claim
from kernels import criticality

NAME = "criticality"
TITLE = "Criticality at initialisation (Roberts, Yaida & Hanin 2022; Klambauer et al. 2017)"

PRESETS = {
    "quick": dict(relu_width=128, relu_depth=8, relu_seeds=3000, off_critical_seeds=1000,
                  tanh_width=128, tanh_depth=16, tanh_seeds=1000, selu_width=256,
                  selu_depth=10, selu_seeds=16, selu_inputs=32, chunk=256),
    "full": dict(relu_width=256, relu_depth=12, relu_seeds=3000, off_critical_seeds=500,
                 tanh_width=256, tanh_depth=32, tanh_seeds=1000, selu_width=512,
                 selu_depth=14, selu_seeds=32, selu_inputs=32, chunk=256),
}

# Running times (SECONDS, see experiments/__init__.py), measured on 2 shared CPU cores:
# quick 21 s, full 90 s.
SECONDS = {"quick": 21, "full": 90}

OFF_CRITICAL = (1.8, 2.2)
#: Starting (mean, variance) of the SELU network's input features.
SELU_STARTS = ((0.0, 1.3), (0.0, 0.75), (0.4, 1.0), (-0.3, 0.8))
#: Klambauer et al. (2017), Theorem 1: mu, omega in [-0.1, 0.1], nu in [0.8, 1.5],
#: tau in [0.95, 1.1].
THEOREM1_DOMAIN = dict(mu=(-0.1, 0.1), omega=(-0.1, 0.1), nu=(0.8, 1.5), tau=(0.95, 1.1))


def _model(activation: str, c_w: float, width: int, depth: int) -> td.MLP:
    return td.MLP(width=width, depth=depth, activation=activation, parametrization="ntk",
                  sigma_w=float(c_w) ** 0.5, bias=False)


def metric_samples(activation: str, c_w: float, width: int, depth: int, seeds: int,
                   x: np.ndarray, chunk: int = 256) -> np.ndarray:
    r"""``(seeds, depth + 1)``: the stochastic metric ``G_hat^{(l)}``, ``l = 1..depth+1``
    (module doc), of ``dynamics.MLP`` networks at initialisation (seeds ``0..seeds-1``,
    keys as ``dynamics.run_key``) on the one input ``x`` of shape ``(1, n_0)``."""
    model = _model(activation, c_w, width, depth)
    x = jnp.asarray(x, jnp.float32)
    phi = activations.get(activation)

    def one(seed):
        params = model.init(jax.random.fold_in(td.run_key(0, seed), 0), x)
        out = model.activations(params, x)
        hidden = [c_w * jnp.mean(phi(out[f"layer{k}"]) ** 2) for k in range(depth)]
        return jnp.stack([c_w * jnp.mean(x**2)] + hidden)

    run = jax.jit(lambda s: jax.lax.map(one, s, batch_size=min(chunk, seeds)))
    return np.asarray(run(jnp.arange(seeds)), float)


def selu_moments(width: int, depth: int, seeds: int, mu0: float, nu0: float,
                 inputs: int = 32, chunk: int = 256) -> np.ndarray:
    r"""``(seeds, depth + 1, 2)``: the mean and variance over units of the input
    (``l = 0``: exactly ``(mu0, nu0)``) and of each hidden layer's activations
    ``selu(z^{(l)})`` of SELU networks with LeCun-normal weights (``sigma_w = 1``),
    averaged over ``inputs`` random input vectors (each with exactly that mean and
    variance over its ``width`` features; nearly orthogonal inputs see nearly independent
    finite-width fluctuations, which averages them down at no extra random numbers)."""
    model = _model("selu", 1.0, width, depth)
    xi = np.random.default_rng(0).standard_normal((inputs, width))
    xi = (xi - xi.mean(1, keepdims=True)) / xi.std(1, keepdims=True)
    x = jnp.asarray(mu0 + np.sqrt(nu0) * xi, jnp.float32)
    phi = activations.get("selu")

    def one(seed):
        params = model.init(jax.random.fold_in(td.run_key(0, seed), 0), x)
        out = model.activations(params, x)
        ys = [x] + [phi(out[f"layer{k}"]) for k in range(depth)]
        return jnp.stack([jnp.stack([jnp.mean(y, -1), jnp.var(y, -1)], -1).mean(0)
                          for y in ys])

    run = jax.jit(lambda s: jax.lax.map(one, s, batch_size=min(chunk, seeds)))
    return np.asarray(run(jnp.arange(seeds)), float)


def _unit_input(dim: int = 16) -> np.ndarray:
    return np.ones((1, dim), np.float32)


def _selu_theory(depth: int):
    """Infinite-width (mu, nu) per layer from each start, the Jacobian's eigenvalues at
    ``(0, 1)`` and the largest spectral norm on the Theorem 1 grid (float64)."""
    with jax.enable_x64(True):
        traj = []
        for mu0, nu0 in SELU_STARTS:
            mu, nu = jnp.float64(mu0), jnp.float64(nu0)
            path = [(mu0, nu0)]
            for _ in range(depth):
                mu, nu = criticality.selu_layer_map(mu, nu)
                path.append((float(mu), float(nu)))
            traj.append(path)
        eig = np.sort(np.abs(np.linalg.eigvals(np.asarray(criticality.selu_moment_jacobian()))))
        fixed = np.asarray(criticality.selu_moment_map(0.0, 1.0), float)
        grid = [np.linspace(*THEOREM1_DOMAIN[k], 5) for k in ("mu", "omega", "nu", "tau")]
        pts = np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, 4)
        jac = jax.vmap(lambda p: criticality.selu_moment_jacobian(p[0], p[2], p[1], p[3]))(
            jnp.asarray(pts))
        norm = float(np.max(np.linalg.norm(np.asarray(jac), ord=2, axis=(-2, -1))))
    return np.asarray(traj), eig, fixed, norm


def run(relu_width, relu_depth, relu_seeds, off_critical_seeds, tanh_width, tanh_depth,
        tanh_seeds, selu_width, selu_depth, selu_seeds, selu_inputs, chunk):
    for name, value in dict(relu_depth=relu_depth, tanh_depth=tanh_depth,
                            selu_depth=selu_depth).items():
        check_int(name, value, minimum=3)
    x = _unit_input()
    c_ws = (OFF_CRITICAL[0], 2.0, OFF_CRITICAL[1])
    relu = metric_samples("relu", 2.0, relu_width, relu_depth, relu_seeds, x, chunk)
    off = np.stack([metric_samples("relu", c, relu_width, relu_depth, off_critical_seeds,
                                   x, chunk) if c != 2.0 else relu[:off_critical_seeds]
                    for c in c_ws])  # the same seeds at C_W = 2
    tanh = metric_samples("tanh", 1.0, tanh_width, tanh_depth, tanh_seeds, x, chunk)
    selu = np.stack([selu_moments(selu_width, selu_depth, selu_seeds, m, v, selu_inputs,
                                  chunk)
                     for m, v in SELU_STARTS])
    rec_relu = np.stack([criticality.kernel_recursion("relu", c, 0.0, c, relu_depth + 1)
                         ["kernel"] for c in c_ws])
    rec_tanh = criticality.kernel_recursion("tanh", 1.0, 0.0, 1.0, tanh_depth + 1)
    rec_long = criticality.kernel_recursion("tanh", 1.0, 0.0, 1.0, 1000)
    selu_traj, selu_eig, selu_fixed, selu_norm = _selu_theory(selu_depth)

    ds = xr.Dataset(
        {
            "relu_metric": (("relu_seed", "relu_layer"), relu),
            "relu_off_critical": (("relu_c_w", "off_seed", "relu_layer"), off),
            "relu_kernel_recursion": (("relu_c_w", "relu_layer"), rec_relu),
            "relu_vertex_exact": (("relu_layer",), relu_width * criticality
                                  .relu_metric_variance_exact(relu_width,
                                                              np.arange(1, relu_depth + 2))),
            "tanh_metric": (("tanh_seed", "tanh_layer"), tanh),
            "tanh_kernel_recursion": (("tanh_layer",), rec_tanh["kernel"]),
            "tanh_vertex_recursion": (("tanh_layer",), rec_tanh["four_point_vertex"]
                                      / rec_tanh["kernel"] ** 2),
            "selu_moments": (("selu_start", "selu_seed", "selu_layer", "moment"), selu),
            "selu_infinite": (("selu_start", "selu_layer", "moment"), selu_traj),
        },
        coords={"relu_c_w": list(c_ws), "relu_layer": np.arange(1, relu_depth + 2),
                "tanh_layer": np.arange(1, tanh_depth + 2),
                "selu_layer": np.arange(selu_depth + 1), "moment": ["mean", "variance"],
                "selu_start": [f"({m}, {v})" for m, v in SELU_STARTS]},
    )
    ds.attrs.update(relu_width=relu_width, tanh_width=tanh_width, selu_width=selu_width,
                    tanh_l_kernel_1000=float(1000 * rec_long["kernel"][-1]),
                    selu_jacobian_eigenvalue=float(selu_eig[-1]),
                    selu_fixed_point_error=float(np.max(np.abs(selu_fixed - [0.0, 1.0]))),
                    selu_theorem1_norm=selu_norm)
    return ds


def normalised_variance(metric: np.ndarray, width: int) -> np.ndarray:
    """``n Var(G_hat) / E[G_hat]^2`` over the seed axis (the second-to-last)."""
    return width * metric.var(-2, ddof=1) / metric.mean(-2) ** 2


def normalised_variance_se(metric: np.ndarray, width: int) -> np.ndarray:
    """Standard error of :func:`normalised_variance` from the sample fourth moment
    (``Var(s^2) ~ (m_4 - s^4) / S``; the mean's own error is second order)."""
    d = metric - metric.mean(-2, keepdims=True)
    s = metric.shape[-2]
    return width * np.sqrt((np.mean(d**4, -2) - np.var(metric, -2) ** 2) / s) \
        / metric.mean(-2) ** 2


def vertex_fit(layers, values) -> tuple[float, float]:
    """``(a, b)`` of the least-squares fit ``a (l - 1) + b (l - 1)^2`` (``V^{(1)} = 0``)."""
    x = np.asarray(layers, float) - 1
    design = np.stack([x, x**2], 1)
    a, b = np.linalg.lstsq(design, np.asarray(values, float), rcond=None)[0]
    return float(a), float(b)


def _rate(layers, kernel) -> float:
    return float(np.polyfit(np.asarray(layers, float), np.log(kernel), 1)[0])


def contraction_factor(nu: np.ndarray) -> float:
    r"""The per-layer factor ``rho`` of the linearised map ``nu_{l+1} - 1 = rho (nu_l - 1)``
    by least squares through the origin, pooled over starts (rows) and layers 1..:
    ``sum d_l d_{l+1} / sum d_l^2``. Layer 0 (the input) is left out: its mean enters the
    next layer only through ``mu^2 + nu`` (``kernels.criticality.selu_layer_map``).
    Large deviations weigh most, so the noise floor of the deep layers hardly matters,
    and starts on both sides of 1 cancel most of the map's second-order term."""
    d = np.asarray(nu, float)[:, 1:] - 1.0
    return float(np.sum(d[:, :-1] * d[:, 1:]) / np.sum(d[:, :-1] ** 2))


def check(ds) -> list[Claim]:
    n_relu, n_tanh = int(ds.attrs["relu_width"]), int(ds.attrs["tanh_width"])
    layers = ds.relu_layer.values
    crit = ds.relu_metric.values
    kernel = crit.mean(0)
    vertex = normalised_variance(crit, n_relu)
    se = normalised_variance_se(crit, n_relu)
    a, _ = vertex_fit(layers, vertex)
    exact = ds.relu_vertex_exact.values
    zscore = np.abs(vertex - exact)[1:] / se[1:]
    rates = [_rate(layers, ds.relu_off_critical.sel(relu_c_w=c).values.mean(0))
             for c in OFF_CRITICAL]

    tl = ds.tanh_layer.values
    tanh = ds.tanh_metric.values
    tk = tanh.mean(0)
    deep = tl >= tl[-1] // 2
    tvertex = normalised_variance(tanh, n_tanh)
    slope = float(np.polyfit(tl[deep], tvertex[deep], 1)[0])
    slope_rec = float(np.polyfit(tl[deep], ds.tanh_vertex_recursion.values[deep], 1)[0])

    rho = float(ds.attrs["selu_jacobian_eigenvalue"])
    nu = ds.selu_moments.sel(moment="variance").mean("selu_seed").values
    factor = contraction_factor(nu)
    factor_inf = contraction_factor(ds.selu_infinite.sel(moment="variance").values)
    last = ds.selu_moments.isel(selu_layer=-1).mean("selu_seed")
    start_dev = np.abs(ds.selu_moments.isel(selu_layer=0).mean("selu_seed").values
                       - [0.0, 1.0]).max()
    last_dev = float(np.abs(last.values - [0.0, 1.0]).max())
    return [
        Claim("relu_kernel_flat", float(np.max(np.abs(kernel / kernel[0] - 1))), 0.02, "<=",
              description="ReLU, C_W = 2: largest |K^(l) / K^(1) - 1| over layers of the "
              "seed-mean stochastic metric (book §5.2: K^(l) = K^(1); the recursion is "
              f"exactly flat: {np.ptp(ds.relu_kernel_recursion.sel(relu_c_w=2.0).values):.1e})"),
        Claim("relu_vertex_constant", a, 5.0, "within", 0.5,
              description="ReLU, C_W = 2: a of the fit a (l-1) + b (l-1)^2 to n Var(G_hat) / "
              "K^2 over seeds, against the book's V^(l) / K^2 = 5 (l - 1) (§5.2; 3A_4/A_2^2 "
              "- 1 = 5). Tolerance 10%: the fit's spread over seed sets is ~5% (quick) and "
              "the exact law's linear part is 5 - 12.5 / n"),
        Claim("relu_vertex_exact_finite_width", float(zscore.max()), 4.0, "<=",
              description="largest |measured - n((1 + 5/n)^(l-1) - 1)| over layers in units "
              "of the measurement's standard error (the exact finite-width law of "
              "kernels.criticality; 4 SE over ~20 correlated layers)"),
        *[Claim(f"relu_rate_c_w_{c}", r, float(np.log(c / 2)), "within", 0.01,
                description=f"ReLU, C_W = {c}: fitted d log K^(l) / dl against log(C_W/2) "
                "(book §5.2: K^(l) = (C_W/2)^(l-1) K^(1), exponential "
                f"{'explosion' if c > 2 else 'decay'}); 0.01 is ~3 standard errors of the "
                "seed-mean log-kernel slope") for c, r in zip(OFF_CRITICAL, rates)],
        Claim("tanh_recursion_l_kernel", float(ds.attrs["tanh_l_kernel_1000"]), 0.5, "within",
              0.005, description="tanh, C_W = 1: l K^(l) of the kernel recursion at l = 1000 "
              "(book §5.3.3: K^(l) ~ 1/(-a_1 l), a_1 = -2; the log correction "
              "(5/24) log(l) / l ~ 0.0014 here)"),
        Claim("tanh_network_l_kernel", float(tl[-1] * tk[-1]), 0.5, "within", 0.05,
              description=f"tanh, C_W = 1: l K^(l) of the networks (seed mean) at layer "
              f"{tl[-1]} against 1/2 (10%; the recursion gives "
              f"{tl[-1] * ds.tanh_kernel_recursion.values[-1]:.3f} there)"),
        Claim("tanh_vertex_slope", slope, slope_rec, "within", 0.25 * slope_rec,
              description="tanh, C_W = 1: slope of n Var(G_hat) / K^2 against l over the "
              "deeper half of the layers, against the leading-order recursion's slope there "
              "(-> 2/3, book §5.3.3). Tolerance 25%: the O(l/n) finite-width correction "
              "(positive, ~+10% at l/n ~ 0.1) and the seed noise (~8%)"),
        Claim("selu_fixed_point", float(ds.attrs["selu_fixed_point_error"]), 1e-6, "<=",
              description="|(mu~, nu~)(0, 1) - (0, 1)| of Klambauer et al.'s moment map "
              "(omega = 0, tau = 1)"),
        Claim("selu_theorem1_contraction", float(ds.attrs["selu_theorem1_norm"]), 1.0, "<=",
              description="largest spectral norm of the moment map's Jacobian on a 5^4 grid "
              "of Klambauer et al.'s Theorem 1 domain (< 1: a contraction)"),
        Claim("selu_return", last_dev, 0.1 * float(start_dev), "<=",
              description="largest |(mu, nu) - (0, 1)| at the last layer (seed mean over "
              "networks, every start), at most a tenth of the starts' largest (the "
              f"linearised map predicts {rho:.3f}^depth, plus the seed noise)"),
        Claim("selu_contraction_rate", factor, rho, "within", 0.05,
              description="per-layer factor of nu_l - 1 in the networks (least squares "
              "nu_{l+1} - 1 = rho (nu_l - 1), pooled over starts and layers) against the "
              "largest eigenvalue of the moment map's Jacobian at (0, 1) (Klambauer et al. "
              "2017). Tolerance 0.05: the finite perturbations' nonlinearity (the same fit "
              f"on the infinite-width trajectories gives {factor_inf:.4f}) and the seed "
              "noise of the deviations"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4))
    ax = axes[0]
    for c, color in zip(ds.relu_c_w.values, ("tab:blue", "k", "tab:red")):
        m = ds.relu_off_critical.sel(relu_c_w=c).mean("off_seed")
        k1 = float(m[0])
        ax.plot(ds.relu_layer, m / k1, "o", color=color, label=f"ReLU C_W={c}")
        ax.plot(ds.relu_layer, ds.relu_kernel_recursion.sel(relu_c_w=c) / k1, "-",
                color=color, lw=1)
    tk = ds.tanh_metric.mean("tanh_seed")
    ax.plot(ds.tanh_layer, tk, "s", color="tab:green", ms=3, label="tanh C_W=1")
    ax.plot(ds.tanh_layer, ds.tanh_kernel_recursion, "-", color="tab:green", lw=1)
    ax.plot(ds.tanh_layer, 1 / (2 * ds.tanh_layer), ":", color="tab:green",
            label="1/(2l)")
    ax.set(yscale="log", xlabel="layer l", ylabel="K^(l) / K^(1)",
           title="kernel over depth (markers: networks; lines: recursion)")
    ax.legend(fontsize=7)

    ax = axes[1]
    n = int(ds.attrs["relu_width"])
    crit = ds.relu_metric.values
    layers = ds.relu_layer.values
    ax.errorbar(layers, normalised_variance(crit, n), normalised_variance_se(crit, n),
                fmt="o", color="k", label=f"ReLU C_W=2, n={n}")
    ax.plot(layers, 5 * (layers - 1), "k-", lw=1, label="5 (l-1) (book)")
    ax.plot(layers, ds.relu_vertex_exact, "k--", lw=1, label="n((1+5/n)^(l-1)-1)")
    ax.set(xlabel="layer l", ylabel="n Var(G_hat) / K^2", title="ReLU: V^(l) / K^2")
    ax.legend(fontsize=7)

    ax = axes[2]
    nt = int(ds.attrs["tanh_width"])
    tanh = ds.tanh_metric.values
    tl = ds.tanh_layer.values
    ax.errorbar(tl, normalised_variance(tanh, nt), normalised_variance_se(tanh, nt),
                fmt="s", ms=3, color="tab:green", label=f"tanh C_W=1, n={nt}")
    ax.plot(tl, ds.tanh_vertex_recursion, "-", color="tab:green", lw=1,
            label="recursion (leading order)")
    ax.plot(tl, 2 * tl / 3, ":", color="tab:green", label="(2/3) l")
    ax.set(xlabel="layer l", ylabel="n Var(G_hat) / K^2", title="tanh (K*=0 class)")
    ax.legend(fontsize=7)

    ax = axes[3]
    rho = float(ds.attrs["selu_jacobian_eigenvalue"])
    mom = ds.selu_moments.mean("selu_seed")
    sl = ds.selu_layer.values
    for i, start in enumerate(ds.selu_start.values):
        nu = mom.sel(selu_start=start, moment="variance").values
        ax.plot(sl[1:], np.abs(nu[1:] - 1), "o", color=f"C{i}", label=f"start {start}")
        inf = ds.selu_infinite.sel(selu_start=start, moment="variance").values
        ax.plot(sl[1:], np.abs(inf[1:] - 1), "-", color=f"C{i}", lw=1)
    first = np.abs(mom.sel(moment="variance").values[:, 1] - 1).max()
    ax.plot(sl[1:], first * rho ** (sl[1:] - 1), "k:", label=f"{rho:.4f}^l (Jacobian)")
    ax.set(yscale="log", xlabel="layer l", ylabel="|nu_l - 1|",
           title="SELU: variance returns to 1")
    ax.legend(fontsize=7)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
