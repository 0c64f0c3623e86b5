r"""DMFT: the infinite-width feature-learning limit of the ``mup`` MLP, solved.

The network is ``dynamics.MLP(parametrization="mup", gamma0=...)`` without biases, one
output, depth ``L >= 1`` hidden layers, trained by full-batch gradient descent on the
simulator's MSE ``L = (1/P) sum_mu (f_mu - y_mu)^2`` (``dynamics.losses``). In the form of
Bordelon & Pehlevan (2022, "Self-Consistent Dynamical Field Theory of Kernel Evolution
in Wide Neural Networks", eq. 1-3; ``dynamics.parametrization``)

.. math::

    h^1 = \sigma W^0 x/\sqrt D,\quad h^{l+1} = \sigma W^l \phi(h^l)/\sqrt N,\quad
    f = \alpha\,\sigma\, w^L\cdot\phi(h^L)/(\gamma_0 N),\qquad
    \theta \leftarrow \theta - \eta\,\gamma_0^2 N\,\nabla_\theta L,

weights ``N(0, 1)``, ``sigma = sigma_w``. The output scale ``alpha`` is not a new
parameter: the network with ``(gamma0, alpha, eta)`` follows the same trajectory as the
one with ``(gamma0/alpha, 1, eta alpha^2)``, so the solver works at ``alpha = 1`` with
``gamma = gamma0/alpha`` and step ``eta alpha^2``; ``gamma0 -> 0`` is the lazy limit.

**Order parameters** (two-time, over examples ``mu, nu`` and GD steps ``t, s``), with
``g^l = gamma N df/dh^l = phi'(h^l) z^l`` the back-propagated signal:
``Phi^l_{mu nu}(t,s) = <phi(h^l_mu(t)) phi(h^l_nu(s))>``,
``G^l_{mu nu}(t,s) = <g^l_mu(t) g^l_nu(s)>``, ``Phi^0 = x_mu . x_nu / D``, ``G^{L+1} = 1``;
the NTK that drives ``f`` (weighted by the learning-rate multipliers, as in
``kernels.ntk(..., lr_weighted=True)``) is
``K_{mu nu}(t) = alpha^2 sigma^2 sum_{l=0}^{L} G^{l+1}_{mu nu}(t,t) Phi^l_{mu nu}(t,t)``
(B&P eq. 5 with ``sigma``). Errors are ``Delta_mu(s) = (2/P)(y_mu - f_mu(s))`` on the
training examples and 0 on test examples (they are carried along and never trained on).

**Single-site processes** (B&P eq. 7-8, Sec. 4, written here for discrete GD with step
``eta`` so that the infinite-width limit of the simulator's updates is exact, not only its
``eta -> 0`` limit). Hidden layer ``l = 1..L`` has its own Gaussian drives
``u^l ~ GP(0, sigma^2 Phi^{l-1})`` and ``r^l ~ GP(0, sigma^2 G^{l+1})`` (``u^1`` and
``r^L`` are static: ``Phi^0`` does not move and ``G^{L+1} = 1``) and

.. math::

    h^l_\mu(t) &= u^l_\mu(t) + \gamma\sigma^2 \sum_{s<t}\sum_\nu
        \big[A^{l-1}_{\mu\nu}(t,s) + \eta\,\Phi^{l-1}_{\mu\nu}(t,s)\Delta_\nu(s)\big]
        g^l_\nu(s),\\
    z^l_\mu(t) &= r^l_\mu(t) + \gamma\sigma^2 \sum_{s\le t}\sum_\nu
        \big[B^{l}_{\mu\nu}(t,s) + \eta\,G^{l+1}_{\mu\nu}(t,s)\Delta_\nu(s)[s<t]\big]
        \phi(h^l_\nu(s)),

with the response functions ``A^l = gamma^{-1} <d phi(h^l)/d r^l>`` (``l < L``) and
``B^{l-1} = gamma^{-1} <d g^l / d u^l>`` (``l > 1``), ``A^0 = B^L = 0`` (B&P eq. 8). In
discrete time ``A`` is strictly causal (``phi(h(t))`` sees the backward drive only through
earlier updates) and ``B`` includes ``s = t`` (``g(t)`` sees ``u(t)`` through ``h(t)``).
The output, exactly (Stein's lemma on the static readout drive ``r^L = rho``):

.. math::

    f_\mu(t) = \frac{1}{\gamma}\langle z^L(t)\,\phi(h^L_\mu(t))\rangle
      = \frac{\sigma^2}{\gamma}\Big\langle\frac{\partial\phi(h^L_\mu(t))}{\partial\rho}\Big\rangle
      + \eta\,\sigma^2\sum_{s<t}\sum_\nu \Phi^L_{\mu\nu}(t,s)\Delta_\nu(s),

whose increment is ``eta K(t) Delta(t)`` to first order in ``eta`` (B&P eq. 5) and whose
higher orders are those of the network's discrete step.

**Solvers** (``solve(..., solver=...)``):

* ``"two_layer"`` (``L = 1``): the drives ``u^1``, ``rho`` are static, so ``S`` sampled
  processes are integrated forward in time together, ``Delta(t)`` from their averages at
  time ``t``; no outer iteration; any activation.
* ``"deep_linear"`` (``phi`` = identity): the single-site equations are linear,
  ``h = u + M_h z``, ``z = r + M_z h`` (``M_h``, ``M_z`` the memory kernels above on the
  ``(t, mu)`` grid), so with ``H = (I - M_h M_z)^{-1}`` (B&P eq. 11-12)
  ``Phi^l = H (sigma^2 Phi^{l-1} + M_h sigma^2 G^{l+1} M_h^T) H^T``,
  ``G^l = Cov(z)``, ``A^l = H M_h / gamma``, ``B^{l-1} = M_z H / gamma``: algebraic, no
  sampling, iterated to self-consistency.
* ``"monte_carlo"`` (any activation, any depth): the alternating scheme of B&P Sec. 5 /
  App. (their Algorithm): kernels -> ``Delta`` -> sample ``u, r`` (fixed whitened noise,
  so the iteration is deterministic) -> solve the causal equations per sample ->
  ``Phi, G`` by sample averages, ``A, B`` by the exact Jacobians of the
  causal equations (recursive forward substitution in time, samples batched) averaged
  over samples -> damped update, until the relative change is
  below ``tol``. Its Monte Carlo error is estimated by solving again with half the
  samples.

Gradient flow (``method="flow"``) is the ``eta -> 0`` limit: GD with ``substeps`` steps of
``eta/substeps`` per simulator step (first-order accurate in ``eta/substeps``).

``solve`` returns an ``xarray.Dataset`` on the simulator's ``step`` coordinate with
``train_loss``, ``train_outputs`` (``test_*`` with test data) and the equal-time
``feature_kernel`` (``Phi^l(t,t)``), ``gradient_kernel`` (``G^l(t,t)``) and ``ntk`` on the
training examples, laid over ``dynamics.sweep(..., width=[...])`` of the same model with
``kernels.dmft.OrderParameters`` logging the network's own kernels.
"""

from kernels.dmft.observables import OrderParameters
from kernels.dmft.problem import Problem, make_problem
from kernels.dmft.solve import solve, solve_spec
from kernels.dmft.whitened import two_layer_linear_whitened

__all__ = ["OrderParameters", "Problem", "make_problem", "solve", "solve_spec",
           "two_layer_linear_whitened"]
