"""Reference muP scales from microsoft/mup 1.0.0 (Yang et al. 2022), saved as test data.

traindyn does not import torch or mup; run this script with a Python that has
``mup==1.0.0`` and a CPU build of PyTorch; it writes ``mup_reference.json`` next to it:

    python tests/data/make_mup_reference.py      # writes tests/data/mup_reference.json

Two models, each built at the base width 64, the delta width 128 (``set_base_shapes``'s
``delta``: the dimensions that differ between base and delta are the width dimensions) and
the widths 64, 128 and 256:

* ``mlp``: ``Linear(D, N)`` (input), ``Linear(N, N)`` (hidden), ``MuReadout(N, K)``, with
  ``D = 10``, ``K = 3``;
* ``gpt``: a GPT-like block: ``Embedding(V, N)``, positions ``(T, N)``, ``LayerNorm``,
  attention ``q, k, v, o = Linear(N, N)`` (4 heads, head dimension ``N / 4``; mup's examples
  scale the logits by ``1/d``, which is in the forward pass, not in any parameter), an MLP
  ``Linear(N, 4N)``, ``Linear(4N, N)``, a final ``LayerNorm`` and ``MuReadout(N, V)``, with
  ``V = 11``, ``T = 5``.

For each parameter (torch layout: a Linear weight is ``(fan_out, fan_in)``):

* ``shape``, ``base_shape`` (mup's ``infshape``; ``null`` for a dimension that is not a width
  dimension), ``ninf``;
* ``sgd_lr`` and ``adam_lr``: the learning rate of the parameter's group in
  ``MuSGD(model.parameters(), lr=1)`` and ``MuAdam(model.parameters(), lr=1)``, i.e. the
  per-parameter learning-rate multiplier;
* ``init_rescale``: the factor by which ``set_base_shapes`` multiplied the parameter's
  PyTorch initialisation (``MuReadout`` weights and biases by ``sqrt(width_mult)``, the biases
  of other ``Linear`` layers by ``sqrt(fan-in width_mult)``), measured entry by entry as
  after / before; ``init_std``: the parameter's empirical standard deviation after
  ``set_base_shapes``;
* for ``MuReadout`` weights, ``output_multiplier``: ``output_mult / width_mult()``, the factor
  by which ``MuReadout.forward`` multiplies its input, checked here against a forward pass.
"""

from __future__ import annotations

import json
import pathlib

import mup
import torch
from torch import nn

BASE, DELTA, WIDTHS = 64, 128, (64, 128, 256)
D_IN, K_OUT = 10, 3
VOCAB, T, HEADS = 11, 5, 4


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.input = nn.Linear(D_IN, width)
        self.hidden = nn.Linear(width, width)
        self.readout = mup.MuReadout(width, K_OUT)

    def forward(self, x):
        return self.readout(torch.tanh(self.hidden(torch.tanh(self.input(x)))))


class GPT(nn.Module):
    """One pre-LayerNorm causal block; attention logits scaled by 1/d (muP)."""

    def __init__(self, width):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.positions = nn.Parameter(0.02 * torch.randn(T, width))
        self.ln1 = nn.LayerNorm(width)
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.ln2 = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = mup.MuReadout(width, VOCAB)

    def forward(self, tokens):
        b, t = tokens.shape
        h = self.embed(tokens) + self.positions[:t]
        a = self.ln1(h)
        d = a.shape[-1] // HEADS
        q, k, v = (f(a).view(b, t, HEADS, d).transpose(1, 2) for f in (self.q, self.k, self.v))
        logits = q @ k.transpose(-1, -2) / d          # muP: 1/d, not 1/sqrt(d)
        logits = logits.masked_fill(torch.ones(t, t).triu(1).bool(), float("-inf"))
        att = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        h = h + self.o(att)
        h = h + self.down(torch.nn.functional.gelu(self.up(self.ln2(h))))
        return self.lm_head(self.ln_f(h))


def group_lrs(optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


def record(cls, width: int) -> dict:
    torch.manual_seed(width)
    model = cls(width)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mup.set_base_shapes(model, cls(BASE), delta=cls(DELTA))
    sgd = group_lrs(mup.MuSGD(model.parameters(), lr=1.0))
    adam = group_lrs(mup.MuAdam(model.parameters(), lr=1.0))
    out = {}
    for name, p in model.named_parameters():
        nonzero = before[name] != 0
        ratio = (p.detach()[nonzero] / before[name][nonzero]).double()
        if ratio.numel():   # a single factor for the whole tensor
            assert (ratio.max() - ratio.min()).item() < 1e-6 * ratio.mean().item()
        entry = {
            "shape": list(p.shape),
            "base_shape": [d.base_dim for d in p.infshape],
            "ninf": p.infshape.ninf(),
            "sgd_lr": sgd[id(p)],
            "adam_lr": adam[id(p)],
            "init_rescale": ratio.mean().item() if ratio.numel() else None,  # None: zeros
            "init_std": p.detach().double().std().item(),
        }
        out[name] = entry
    for name, module in model.named_modules():
        if isinstance(module, mup.MuReadout):
            mult = module.output_mult / module.width_mult()
            x = torch.randn(2, module.in_features)
            direct = (mult * x) @ module.weight.T + module.bias
            assert torch.allclose(module(x), direct, atol=1e-6)
            out[f"{name}.weight"]["output_multiplier"] = mult
    return out


def main():
    torch.set_num_threads(1)
    data = {
        "source": f"microsoft/mup {getattr(mup, '__version__', '1.0.0')}, torch "
                  f"{torch.__version__}: tests/data/make_mup_reference.py",
        "base_width": BASE,
        "delta_width": DELTA,
        "mlp": {"d_in": D_IN, "k_out": K_OUT,
                "widths": {str(n): record(MLP, n) for n in WIDTHS}},
        "gpt": {"vocab": VOCAB, "positions": T, "heads": HEADS,
                "widths": {str(n): record(GPT, n) for n in WIDTHS}},
    }
    path = pathlib.Path(__file__).with_name("mup_reference.json")
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
