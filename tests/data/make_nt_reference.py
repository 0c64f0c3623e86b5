"""Reference values of infinite-width NNGP and NTK kernels from neural-tangents.

Run with a Python that has neural-tangents 0.6.5, jax 0.4.23 and numpy<2 (neural-tangents
does not import on current JAX, so it is a reference, not a dependency):

    python tests/data/make_nt_reference.py            # writes tests/data/nt_reference.json

Each case describes a ``dynamics.MLP`` (width, depth, activation, parametrization,
sigma_w, sigma_b, bias, output_scale, gamma0) and the stax network that has the same
kernels: ``Dense(width, W_std=sigma_w, b_std=sigma_b, parameterization=p)`` per hidden
layer with the activation after it, and a readout ``Dense(1, ...)``; ``bias=False`` is
``b_std=None``. The output scale ``alpha`` multiplies the readout's ``W_std`` and ``b_std``
(NTK parametrization only: under "standard" the readout's NTK term ``n k`` does not scale
with ``W_std``). The mup readout (Bordelon & Pehlevan 2022) is the NTK parametrization's
divided by ``gamma0 sqrt(N)``: ``W_std = sigma_w / (gamma0 sqrt N)``,
``b_std = sigma_b / (gamma0 sqrt N)``. Activations: ``Identity``, ``Relu``, ``Erf``,
``Gelu(approximate=False)`` (closed forms) and ``ABRelu(a, b)``, ``LeakyRelu(s)`` (which
the MLP lacks; tests pass them as ``activation_duals``). Kernels are computed in float64.
"""

import json
import math
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = pathlib.Path(__file__).with_name("nt_reference.json")


def activation_layer(spec):
    name = spec["name"]
    if name == "linear":
        return stax.Identity()
    if name == "relu":
        return stax.Relu()
    if name == "erf":
        return stax.Erf()
    if name == "gelu":
        return stax.Gelu(approximate=False)
    if name == "abrelu":
        return stax.ABRelu(spec["a"], spec["b"])
    if name == "leaky_relu":
        return stax.LeakyRelu(spec["slope"])
    raise ValueError(name)


def network(case):
    width, depth = case["width"], case["depth"]
    p = case["parametrization"]
    sw, sb = case["sigma_w"], case["sigma_b"] if case["bias"] else None
    alpha, gamma0 = case["output_scale"], case["gamma0"]
    dense_p = "standard" if p == "standard" else "ntk"
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=sw, b_std=sb, parameterization=dense_p),
                   activation_layer(case["activation"])]
    readout_w, readout_b = sw * alpha, None if sb is None else sb * alpha
    if p == "mup":
        n = width if depth else case["input_dim"]
        readout_w = readout_w / (gamma0 * math.sqrt(n))
        readout_b = None if readout_b is None else readout_b / (gamma0 * math.sqrt(n))
    layers.append(stax.Dense(1, W_std=readout_w, b_std=readout_b, parameterization=dense_p))
    return stax.serial(*layers)


def cases():
    base = dict(width=64, depth=1, sigma_w=1.0, sigma_b=0.0, bias=False, output_scale=1.0,
                gamma0=1.0)
    acts = [{"name": "linear"}, {"name": "relu"}, {"name": "erf"}, {"name": "gelu"},
            {"name": "abrelu", "a": -0.3, "b": 1.2}, {"name": "leaky_relu", "slope": 0.1}]
    out = []
    for p in ("ntk", "standard", "mup"):
        for act in acts:
            for depth, bias, sw, sb in ((1, False, 1.0, 0.0), (2, True, 1.4, 0.3),
                                        (3, True, 0.9, 0.7)):
                alpha = 1.0 if p == "standard" else 1.7
                out.append({**base, "parametrization": p, "activation": act, "depth": depth,
                            "bias": bias, "sigma_w": sw, "sigma_b": sb,
                            "output_scale": alpha, "gamma0": 0.5 if p == "mup" else 1.0})
    out.append({**base, "parametrization": "ntk", "activation": {"name": "relu"},
                "depth": 0, "bias": True, "sigma_w": 1.3, "sigma_b": 0.4})
    return out


def main():
    rng = np.random.default_rng(0)
    dim = 5
    x1 = rng.normal(size=(6, dim))
    x2 = rng.normal(size=(4, dim)) * 1.5
    records = []
    for case in cases():
        case["input_dim"] = dim
        kernel_fn = network(case)[2]
        k = kernel_fn(jnp.asarray(x1), jnp.asarray(x2), ("nngp", "ntk"))
        k11 = kernel_fn(jnp.asarray(x1), None, ("nngp", "ntk"))
        records.append({"model": case,
                        "nngp": np.asarray(k.nngp).tolist(), "ntk": np.asarray(k.ntk).tolist(),
                        "nngp_11": np.asarray(k11.nngp).tolist(),
                        "ntk_11": np.asarray(k11.ntk).tolist()})
    versions = {"neural_tangents": nt.__version__ if hasattr(nt, "__version__") else "0.6.5",
                "jax": jax.__version__, "numpy": np.__version__}
    OUT.write_text(json.dumps({"versions": versions, "x1": x1.tolist(), "x2": x2.tolist(),
                               "cases": records}, indent=1) + "\n")
    print(f"wrote {len(records)} cases to {OUT}")


if __name__ == "__main__":
    main()
