"""PyHessian's top Hessian eigenvalue of an MLP, timed: the PyTorch side of
``traindyn bench curvature``.

Run with an interpreter that has torch (CPU build) and pyhessian installed, never from
traindyn's own environment (neither is a traindyn dependency)::

    python scripts/pyhessian_top_eigenvalue.py problem.npz

``problem.npz`` holds ``x (N, d)``, ``y (N, 1)``, the weights ``w0 (d, h), b0 (h,),
w1 (h, h), ..., wL (h, 1), bL (1,)`` and the scalars ``multipliers`` (one per layer, the
NTK-parametrization factor ``1/sqrt(fan_in)``) and ``bias_multiplier``. The network is
``h_{l+1} = m_l h_l W_l + beta b_l`` with tanh between layers, the loss ``torch.nn.MSELoss``
(a mean over the ``N`` rows for one output, as ``dynamics.losses.mse``). Prints one JSON
line: PyHessian's eigenvalue, the Hessian-vector products it used (power iterations),
the median wall time over ``repeats`` calls and the torch and pyhessian versions.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata

import numpy as np
import torch
from pyhessian import hessian


class MLP(torch.nn.Module):
    def __init__(self, weights, biases, multipliers, bias_multiplier):
        super().__init__()
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.tensor(w)) for w in weights])
        self.biases = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.tensor(b)) for b in biases])
        self.multipliers = [float(m) for m in multipliers]
        self.bias_multiplier = float(bias_multiplier)

    def forward(self, x):
        h = x
        for layer, (w, b, m) in enumerate(zip(self.weights, self.biases, self.multipliers)):
            if layer > 0:
                h = torch.tanh(h)
            h = m * (h @ w) + self.bias_multiplier * b
        return h


def main(path: str, repeats: int = 3, tol: float = 1e-3, max_iter: int = 100) -> dict:
    torch.set_num_threads(torch.get_num_threads())
    torch.manual_seed(0)
    data = np.load(path)
    n_layers = int(data["n_layers"])
    model = MLP([data[f"w{i}"] for i in range(n_layers)],
                [data[f"b{i}"] for i in range(n_layers)],
                data["multipliers"], data["bias_multiplier"])
    x, y = torch.tensor(data["x"]), torch.tensor(data["y"])
    criterion = torch.nn.MSELoss()
    times, values, iters = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        comp = hessian(model, criterion, data=(x, y), cuda=False)
        eigenvalues, _ = comp.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)
        times.append(time.perf_counter() - start)
        values.append(float(eigenvalues[0]))
    # PyHessian does not report its iteration count; count the products of one call.
    count = {"n": 0}
    module = sys.modules["pyhessian.hessian"]  # the package re-exports the class as the name
    hvp = module.hessian_vector_product

    def counted(*args, **kwargs):
        count["n"] += 1
        return hvp(*args, **kwargs)

    module.hessian_vector_product = counted
    hessian(model, criterion, data=(x, y), cuda=False).eigenvalues(maxIter=max_iter, tol=tol,
                                                                   top_n=1)
    module.hessian_vector_product = hvp
    iters.append(count["n"])
    return {
        "eigenvalue": values[-1],
        "hvps": iters[0],
        "seconds": float(np.median(times)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyhessian": metadata.version("pyhessian"),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
