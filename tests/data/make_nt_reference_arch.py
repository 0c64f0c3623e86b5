"""Reference infinite-width NNGP and NTK kernels of residual and convolutional networks from
neural-tangents.

Run with a Python that has neural-tangents 0.6.5, jax 0.4.23 and numpy<2 (the side
environment of the project's neural-tangents peer script; see make_nt_reference.py):

    python tests/data/make_nt_reference_arch.py     # writes tests/data/nt_reference_arch.json

ResidualMLP cases: ``Dense(N)`` (the input layer), then per block
``FanOut(2) -> parallel(branch, Identity()) -> FanInSum()`` with the branch multiplier
``b = branch_scale * depth^(-depth_exponent)``, and a readout ``act -> Dense(1)`` on the
last stream. Under the NTK parametrization (and mup) the branch is
``act -> Dense(N, W_std=b sigma_w, b_std=b sigma_b)`` (a multiplier on the weights is one
on their std). Under "standard" neural-tangents' NTK term ``n k`` of a Dense does not
scale with ``W_std``, so the branch is ``b act -> Dense(N)`` (``ABRelu(0, b)`` for relu,
``Erf(a=b)`` for erf) without biases (the Dense's bias term would stay unscaled).
The output scale multiplies the readout's ``W_std`` and ``b_std`` (NTK parametrization; under
"standard" alpha = 1); the mup readout is the NTK parametrization's divided by
``gamma0 sqrt(N)`` (as in make_nt_reference.py).

ConvNet cases: ``depth`` times ``Conv(N, (k, k), padding="SAME", parameterization="ntk")``
and the activation, ``GlobalAvgPool()``, ``Dense(1)``; images ``(n, H, W, C)``. Kernels
in float64.
"""

import json
import math
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = pathlib.Path(__file__).with_name("nt_reference_arch.json")
ACTIVATIONS = {"relu": stax.Relu, "erf": stax.Erf}


def readout_stds(case, fan_in):
    sw, sb = case["sigma_w"], case["sigma_b"] if case["bias"] else None
    w, b = sw * case["output_scale"], None if sb is None else sb * case["output_scale"]
    if case["parametrization"] == "mup":
        theta = case["gamma0"] * math.sqrt(fan_in)
        w, b = w / theta, None if b is None else b / theta
    return w, b


def residual_network(case):
    n, depth, p = case["width"], case["depth"], case["parametrization"]
    sw, sb = case["sigma_w"], case["sigma_b"] if case["bias"] else None
    dense_p = "standard" if p == "standard" else "ntk"
    act = ACTIVATIONS[case["activation"]]
    b = case["branch_scale"] * depth ** (-case["depth_exponent"])
    layers = [stax.Dense(n, W_std=sw, b_std=sb, parameterization=dense_p)]
    for _ in range(depth):
        if dense_p == "ntk":  # the multiplier folded into the stds: exact under ntk
            branch = stax.serial(act(), stax.Dense(n, W_std=b * sw, b_std=None if sb is None
                                                   else b * sb, parameterization="ntk"))
        else:  # the standard NTK term n k ignores W_std: scale the activation instead
            assert sb is None, "standard residual cases have no biases"
            scaled = stax.ABRelu(0.0, b) if case["activation"] == "relu" else stax.Erf(a=b)
            branch = stax.serial(scaled, stax.Dense(n, W_std=sw, b_std=None,
                                                    parameterization=dense_p))
        layers += [stax.FanOut(2), stax.parallel(branch, stax.Identity()), stax.FanInSum()]
    w, bb = readout_stds(case, n)
    layers += [act(), stax.Dense(1, W_std=w, b_std=bb, parameterization=dense_p)]
    return stax.serial(*layers)


def conv_network(case):
    n, k = case["width"], case["kernel_size"]
    sw, sb = case["sigma_w"], case["sigma_b"] if case["bias"] else None
    act = ACTIVATIONS[case["activation"]]
    layers = []
    for _ in range(case["depth"]):
        layers += [stax.Conv(n, (k, k), padding="SAME", W_std=sw, b_std=sb,
                             parameterization="ntk"), act()]
    w, bb = readout_stds(case, n)
    layers += [stax.GlobalAvgPool(), stax.Dense(1, W_std=w, b_std=bb, parameterization="ntk")]
    return stax.serial(*layers)


def residual_cases():
    base = dict(width=32, bias=True, sigma_w=1.2, sigma_b=0.3, output_scale=1.0, gamma0=1.0,
                branch_scale=1.0)
    out = []
    for act in ("relu", "erf"):
        for depth, exponent in ((2, 0.0), (3, 0.5), (3, 1.0)):
            out.append({**base, "parametrization": "ntk", "activation": act, "depth": depth,
                        "depth_exponent": exponent, "output_scale": 1.5,
                        "branch_scale": 0.8})
            out.append({**base, "parametrization": "standard", "activation": act,
                        "depth": depth, "depth_exponent": exponent, "bias": False,
                        "sigma_b": 0.0})
    out.append({**base, "parametrization": "mup", "activation": "erf", "depth": 2,
                "depth_exponent": 0.5, "gamma0": 0.5, "bias": False, "sigma_b": 0.0})
    return out


def conv_cases():
    base = dict(width=16, kernel_size=3, bias=True, sigma_w=1.3, sigma_b=0.2,
                parametrization="ntk", output_scale=1.2, gamma0=1.0)
    return [{**base, "activation": act, "depth": depth}
            for act in ("relu", "erf") for depth in (1, 2)]


def records(cases, network, x1, x2):
    out = []
    for case in cases:
        kernel_fn = network(case)[2]
        k = kernel_fn(jnp.asarray(x1), jnp.asarray(x2), ("nngp", "ntk"))
        k11 = kernel_fn(jnp.asarray(x1), None, ("nngp", "ntk"))
        out.append({"model": case, "nngp": np.asarray(k.nngp).tolist(),
                    "ntk": np.asarray(k.ntk).tolist(),
                    "nngp_11": np.asarray(k11.nngp).tolist(),
                    "ntk_11": np.asarray(k11.ntk).tolist()})
    return out


def main():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(4, 5))
    x2 = rng.normal(size=(3, 5)) * 1.5
    images1 = rng.normal(size=(3, 5, 4, 2))
    images2 = rng.normal(size=(2, 5, 4, 2)) * 1.3
    versions = {"neural_tangents": "0.6.5", "jax": jax.__version__, "numpy": np.__version__}
    data = {"versions": versions,
            "residual": {"x1": x1.tolist(), "x2": x2.tolist(),
                         "cases": records(residual_cases(), residual_network, x1, x2)},
            "conv": {"x1": images1.tolist(), "x2": images2.tolist(),
                     "cases": records(conv_cases(), conv_network, images1, images2)}}
    OUT.write_text(json.dumps(data) + "\n")
    print(f"wrote {len(data['residual']['cases'])} residual and {len(data['conv']['cases'])} "
          f"conv cases to {OUT}")


if __name__ == "__main__":
    main()
