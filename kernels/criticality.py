r"""Signal propagation through a deep MLP at initialisation, one input at a time: the
kernel recursion, its susceptibility, the leading finite-width correction (the
four-point vertex) and the self-normalising map of SELU.

Notation of Roberts, Yaida & Hanin (2022), *The Principles of Deep Learning Theory*
(Cambridge; arXiv:2106.10165): the pre-activations of layer ``l`` of an MLP of width ``n``
with ``W ~ N(0, C_W / n)``, ``b ~ N(0, C_b)`` (the ``ntk`` parametrization of
``dynamics.MLP`` with ``C_W = sigma_w^2``, ``C_b = sigma_b^2``; the ``standard`` one has
the same forward distribution) are ``z^{(l)}``, ``z^{(1)} = W x + b`` with
``K^{(1)} = C_b + C_W |x|^2 / n_0``. Equation numbers below are not given because they
differ between the arXiv versions and the printed book; sections are those of the book.

* **Kernel recursion** (ch. 4, §4.3, the single-input case of the NNGP recursion;
  Poole et al. 2016, eq. 3):
  ``K^{(l+1)} = C_b + C_W <sigma(z)^2>_{K^{(l)}}``, with ``<f>_K = E f(sqrt(K) xi)``,
  ``xi ~ N(0, 1)``.
* **Parallel susceptibility** (ch. 5, §5.1): ``chi_par(K) = dK^{(l+1)}/dK^{(l)} =
  (C_W / (2 K^2)) <sigma(z)^2 (z^2 - K)>_K`` (Gaussian integration by parts); criticality
  means ``chi_par = chi_perp = 1`` at the fixed point.
* **Four-point vertex** (ch. 4, §4.3, single input, equal hidden widths, leading order in
  ``1/n``): ``V^{(1)} = 0`` and
  ``V^{(l+1)} = chi_par(K^{(l)})^2 V^{(l)} + C_W^2 (<sigma^4>_{K^{(l)}} -
  <sigma^2>_{K^{(l)}}^2)``. ``V^{(l)} / n`` is the variance of the *stochastic metric*
  ``G_hat^{(l)} = C_b + C_W (1/n) sum_j sigma(z_j^{(l-1)})^2`` (the conditional variance
  of ``z^{(l)}`` given the previous layer), so ``V^{(l)} / (n (K^{(l)})^2)`` is the
  normalised variance of the layer's kernel over initialisations.
* **Scale-invariant class** (§5.2): ``sigma(z) = a_+ z`` for ``z >= 0``, ``a_- z`` below,
  ``A_2 = (a_+^2 + a_-^2) / 2``, ``A_4 = (a_+^4 + a_-^4) / 2``; criticality
  ``C_b = 0``, ``C_W = 1 / A_2`` (ReLU: ``C_W = 2``), where ``K^{(l)} = K^{(1)}`` exactly
  and ``V^{(l)} / (K^{(l)})^2 = (l - 1)(3 A_4 / A_2^2 - 1)``: ``5 (l - 1)`` for ReLU.
  Off criticality (``C_b = 0``) ``K^{(l)} = (C_W A_2)^{l-1} K^{(1)}``: exponential
  explosion or decay.
* **K* = 0 class** (§5.3.3), e.g. tanh at ``C_b = 0``, ``C_W = 1 / sigma_1^2``:
  ``K^{(l+1)} = K + a_1 K^2 + O(K^3)`` with ``a_1 = sigma_3 / sigma_1 + (3/4)(sigma_2 /
  sigma_1)^2`` (tanh: ``a_1 = -2``), so ``K^{(l)} = 1 / (-a_1 l) + O(log l / l^2)``; for
  tanh the next coefficient ``<tanh^2>_K = K - 2 K^2 + (17/3) K^3 + ...`` gives
  ``1 / K^{(l)} = 2 l - (5/6) log l + O(1)``. The normalised vertex grows like
  ``V^{(l)} / (K^{(l)})^2 = (2/3) l + ...`` for every member of the class (the recursion
  above with ``chi_par = 1 + 2 a_1 K`` and ``<sigma^4> - <sigma^2>^2 = 2 K^2 sigma_1^4``).
* **ReLU at finite width, exactly** (no biases, ``C_W = 2``): given layer ``l``,
  ``z^{(l+1)} ~ N(0, G_hat^{(l+1)} I_n)``, so ``G_hat^{(l+2)} = G_hat^{(l+1)} (2/n) X_l``
  with ``X_l ~ chi^2`` with ``Binomial(n, 1/2)`` degrees of freedom, independent across
  layers (the product structure of Hanin & Nica 2020, "Products of many large random
  matrices and gradients in deep neural networks", §2). Hence ``E G_hat^{(l)} = K^{(1)}``
  and ``E (G_hat^{(l)} / K^{(1)})^2 = (1 + 5/n)^{l-1}`` at every width:
  :func:`relu_metric_variance_exact`, whose ``1/n`` term is the book's ``5 (l - 1)``.
* **SELU** (Klambauer et al. 2017, "Self-Normalizing Neural Networks", eq. 2): the map
  of the mean and variance of a layer's activations, :func:`selu_moment_map`, has the
  fixed point ``(0, 1)`` at ``omega = 0``, ``tau = 1`` and is a contraction there
  (their Theorem 1): :func:`selu_moment_jacobian`.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dynamics import activations
from dynamics.checks import check_float, check_int

#: Klambauer et al. (2017), Sec. 3: ``alpha_01`` and ``lambda_01``, the parameters of
#: selu (their eq. 2) that make ``(mu, nu) = (0, 1)`` the fixed point at
#: ``omega = 0, tau = 1`` (also ``jax.nn.selu``'s).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946


@functools.lru_cache(maxsize=None)
def _nodes(degree: int):
    z, w = np.polynomial.hermite_e.hermegauss(degree)
    return z, w / math.sqrt(2 * math.pi)


def gaussian_moments(activation, k, degree: int = 200) -> dict[str, np.ndarray]:
    r"""``<sigma^2>_K``, ``<sigma^4>_K`` and ``chi_par / C_W = <sigma^2 (z^2 - K)>_K /
    (2 K^2)`` for ``z ~ N(0, K)`` (``k`` broadcasts), by ``degree``-node Gauss-Hermite
    quadrature in float64 (exact for ReLU and any odd-symmetric-node integrand of a
    scale-invariant ``sigma``: the nodes are symmetric and ``relu(z)^p`` integrates to
    half of ``|z|^p``). ``activation`` is a name of ``dynamics.activations`` or a
    NumPy-callable ``sigma``."""
    phi = _numpy_activation(activation)
    z, w = _nodes(degree)
    k = np.asarray(k, float)
    zz = np.sqrt(k)[..., None] * z
    s2 = phi(zz) ** 2
    m2 = s2 @ w
    m4 = (s2**2) @ w
    chi = (s2 * (zz**2 - k[..., None])) @ w / (2 * k**2)
    return {"sigma2": m2, "sigma4": m4, "chi_over_cw": chi}


def _numpy_activation(activation) -> Callable:
    if callable(activation):
        return activation
    numpy_forms = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh,
                   "linear": lambda x: x, "selu": _selu_numpy,
                   "erf": np.vectorize(math.erf, otypes=[float])}
    if activation in numpy_forms:
        return numpy_forms[activation]
    fn = activations.get(activation)

    def float64(x):
        with jax.enable_x64(True):
            return np.asarray(fn(jnp.asarray(x, jnp.float64)), float)

    return float64


def _selu_numpy(x):
    return SELU_LAMBDA * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


def kernel_recursion(activation, c_w: float, c_b: float, k1: float, depth: int,
                     degree: int = 200) -> dict[str, np.ndarray]:
    r"""The single-input kernel ``K^{(l)}``, the susceptibility ``chi_par(K^{(l)})`` and
    the four-point vertex ``V^{(l)}`` for ``l = 1..depth`` (index 0 is layer 1), from
    ``K^{(1)} = k1`` (module doc: ch. 4 §4.3, ch. 5 §5.1 of Roberts, Yaida & Hanin 2022).
    Float64 NumPy arrays of length ``depth``."""
    check_int("depth", depth)
    check_float("c_w", c_w, 0.0, low_open=True)
    check_float("c_b", c_b, 0.0)
    check_float("k1", k1, 0.0, low_open=True)
    ks, vs, chis = [float(k1)], [0.0], []
    for _ in range(depth):
        m = gaussian_moments(activation, ks[-1], degree)
        chi = c_w * float(m["chi_over_cw"])
        chis.append(chi)
        if len(ks) == depth:
            break
        ks.append(c_b + c_w * float(m["sigma2"]))
        vs.append(chi**2 * vs[-1] + c_w**2 * float(m["sigma4"] - m["sigma2"] ** 2))
    return {"kernel": np.array(ks), "chi_parallel": np.array(chis),
            "four_point_vertex": np.array(vs)}


def relu_metric_variance_exact(width: int, layers) -> np.ndarray:
    r"""``Var(G_hat^{(l)}) / (K^{(1)})^2 = (1 + 5/n)^{l-1} - 1``: the exact normalised
    variance over initialisations of a bias-free ReLU network's stochastic metric at
    ``C_W = 2`` and width ``n`` (module doc); ``n`` times it is ``5 (l - 1) + O(l^2 / n)``,
    the book's ``V^{(l)} / (K^{(l)})^2`` (§5.2) at leading order."""
    check_int("width", width)
    layers = np.asarray(layers, float)
    return (1.0 + 5.0 / width) ** (layers - 1) - 1.0


def _ndtr(x):
    return jax.scipy.special.ndtr(x)


def selu_moment_map(mu, nu, omega=0.0, tau=1.0):
    r"""``(mu_tilde, nu_tilde)``: the mean and variance of ``selu(z)`` for
    ``z ~ N(mu omega, nu tau)`` (Klambauer et al. 2017, eqs. 4-5 and their closed forms,
    Sec. 3), where ``mu, nu`` are the mean and variance of a layer's inputs and
    ``omega = sum_i w_i``, ``tau = sum_i w_i^2`` the sums of a unit's weights. Closed form
    (``m = mu omega``, ``s^2 = nu tau``, ``Phi`` the normal CDF):
    ``E selu(z) = lambda [m Phi(m/s) + s phi(m/s) + alpha (e^{m + s^2/2}
    Phi(-(m + s^2)/s) - Phi(-m/s))]``, ``E selu(z)^2 = lambda^2 [(m^2 + s^2) Phi(m/s) +
    m s phi(m/s) + alpha^2 (e^{2m + 2s^2} Phi(-(m + 2 s^2)/s) - 2 e^{m + s^2/2}
    Phi(-(m + s^2)/s) + Phi(-m/s))]``. JAX, differentiable (use float64 for the fixed
    point to 1e-12).

    For a layer of ``n`` units with i.i.d. weights ``N(0, 1/n)`` (LeCun normal, as
    Klambauer et al. initialise) the statistics *over the units* are those of this map
    at ``(mu, omega, nu, tau) = (0, 0, mu^2 + nu, 1)``: each unit's ``omega`` is
    ``N(0, 1)``, so its ``mu omega`` term adds ``mu^2`` to the variance across units;
    the Jacobian at ``(0, 1)`` is the same (``d(mu^2)/d mu = 0`` there)."""
    a, lam = SELU_ALPHA, SELU_LAMBDA
    m = mu * omega
    s2 = nu * tau
    s = jnp.sqrt(s2)
    pdf = jnp.exp(-0.5 * (m / s) ** 2) / math.sqrt(2 * math.pi)
    # e^{c} Phi(-x) written as exp(c + log Phi(-x)) to stay finite for large variances
    e1 = jnp.exp(m + s2 / 2 + jax.scipy.special.log_ndtr(-(m + s2) / s))
    e2 = jnp.exp(2 * m + 2 * s2 + jax.scipy.special.log_ndtr(-(m + 2 * s2) / s))
    neg = _ndtr(-m / s)
    mean = lam * (m * _ndtr(m / s) + s * pdf + a * (e1 - neg))
    second = lam**2 * ((m**2 + s2) * _ndtr(m / s) + m * s * pdf + a**2 * (e2 - 2 * e1 + neg))
    return mean, second - mean**2


def selu_layer_map(mu, nu):
    r"""One layer of a wide SELU network with weights ``N(0, 1/n)`` and no biases, on the
    mean and variance over units: :func:`selu_moment_map` at
    ``(0, 0, mu^2 + nu, 1)`` (see there)."""
    return selu_moment_map(0.0, mu**2 + nu, 0.0, 1.0)


def selu_moment_jacobian(mu=0.0, nu=1.0, omega=0.0, tau=1.0):
    r"""The 2x2 Jacobian ``d(mu_tilde, nu_tilde) / d(mu, nu)`` of :func:`selu_moment_map`
    (Klambauer et al. 2017, Theorem 1: its spectral norm is below 1 on their domain, so
    the map contracts to the fixed point); at ``(0, 1)``, ``omega = 0``, ``tau = 1`` its
    eigenvalues are ``0`` and ``d nu_tilde / d nu ~ 0.78``, the rate at which a
    perturbed variance returns to 1 per layer."""
    f = lambda v: jnp.stack(selu_moment_map(v[0], v[1], omega, tau))  # noqa: E731
    return jax.jacfwd(f)(jnp.stack([jnp.asarray(mu, float), jnp.asarray(nu, float)]))
