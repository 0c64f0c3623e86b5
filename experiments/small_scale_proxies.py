r"""Small-scale proxies for large-scale Transformer training instabilities.

Wortsman et al. (2023), "Small-scale proxies for large-scale Transformer training
instabilities" (arXiv:2309.14322). Two instabilities of large Transformers appear in small
ones trained at high learning rates: the *attention-logit growth* (their Sec. 3.1.1, Fig.
1: without qk-layernorm the largest attention logit grows with the learning rate and the
runs diverge; qk-layernorm, Dehghani et al. 2023, removes it) and the *output-logit
divergence* (Sec. 3.1.2, Fig. 4: without the z-loss the log-partition ``log Z`` of the
output logits drifts far negative at high learning rates; the z-loss of Chowdhery et al.
2022, ``dynamics.losses.cross_entropy_z_loss``, keeps it near 0). Their measure of how
much a model's final loss depends on its learning rate is the *learning-rate sensitivity*
(Sec. 2.3, eq. 1), for a grid of learning rates ``eta`` in ``[a, b]``:

.. math::

    \mathrm{LR\ sensitivity} = \mathbb{E}_{\eta \in [a, b]}
        \left[\min(\ell(\mathcal{A}(\eta)), \ell_0) - \ell^*\right], \qquad
    \ell^* = \min_{\eta \in [a, b]} \ell(\mathcal{A}(\eta)),

``ell_0`` the loss at initialisation (a diverged run counts as ``ell_0``), the expectation
the mean over the log-spaced grid (``lr_sensitivity``). Their Fig. 1 and Fig. 9 show it
grows with model size without the mitigations and stays small with qk-layernorm and the
z-loss.

Setup (the paper's Sec. 2, scaled down): ``td.Transformer`` (pre-LayerNorm, causal, no
biases, standard parametrization, heads of dimension 8, at least 2)
of depth 2 on next-token prediction on a random Markov chain
(``td.tasks.markov_chain``, 32 tokens, sequences of 16, its Bayes loss known), trained
with AdamW (``beta1 = 0.9``, ``beta2 = 0.95``, ``eps = 1e-8``), a linear warmup over the
first 10% of the steps then a cosine decay, gradient clipping at global norm 1, and
learning-rate-independent weight decay ``1e-4`` (``weight_decay_coupling="independent"``:
``theta -= s(t) lambda theta``, the paper's "independent decay"), minibatches of 32, one
seed. The training set holds ``steps * batch_size / 2`` or more sequences: each is seen
about twice, so the model cannot memorise it (the paper never repeats data; with a few
hundred sequences the training loss fell far below the chain's Bayes loss, 0.14 against
2.21 nats, and the memorised predictions drove ``log Z`` up).
Swept: the learning rate on the paper's grid ``3e-4 .. 3e-1`` (half-decades: 7 points),
qk-layernorm off/on, z-loss off/on (the same task, built with
``loss="cross_entropy_z_loss"``), and the width. The loss in the sensitivity is the
training cross-entropy after the budget, with the z-loss term removed
(``train_loss - 1e-4 * z_loss`` for the z-loss runs: both are measured on the same
positions, so this is the cross-entropy exactly).

Scale: the paper (Sec. 2) trains Transformers up to about a billion parameters on C4,
sequences of 512 tokens, batches of 256, ``1e5`` steps (warmup ``5e3``, cosine decay to
``1e-5``; here the cosine decays to 0). Here: ``quick``: widths 16 and 64, depth 2, 240
steps of batches of 32, three configurations (about 4 minutes on 2 busy CPU cores, much of
it compiling: one program per width and configuration); ``full``: widths 16, 32, 64, every
configuration, 320 steps (about 11 minutes). That is 4-5 orders of magnitude fewer
parameters, 300-400x fewer steps, 30x shorter sequences and 500x smaller batches. Instabilities that need the paper's scale or
length of training to appear may not appear here: every claim reports its measured
value, and one that does not hold at this scale fails.

Measured (quick, width 64): the attention-logit instability is reproduced: without
qk-layernorm the largest attention logit grows from ~6 to ~1.5e5 over the grid and the
loss at lr 3e-1 degrades (2.72 nats against 2.27 with qk-layernorm, the Bayes loss 2.21),
and qk-layernorm lowers the LR sensitivity to 0.57 of the unmitigated one. The output-logit
divergence is not: in a few hundred steps ``log Z`` rises from ``log 32 = 3.47`` to ~4.9
(the predictions sharpen) with or without the z-loss, whose ``1e-4`` coefficient has had
no time to act (the paper's drift builds over ``1e5`` steps). The sensitivity falls with
width for every configuration: at this budget it is dominated by the under-trained small
learning rates, at which the wider model trains faster. Those claims fail, with their
measured values. The full preset (widths 16, 32, 64, 320 steps) gives the same picture:
logit ratio 3.6e4, qk-layernorm sensitivity ratio 0.60, ``log Z`` 4.2-4.9 with or
without the z-loss, unmitigated sensitivity 0.35, 0.17, 0.10 nats at widths 16, 32, 64.

Claims (at the widest width of the preset; measured values in ``summary.json``):

* ``attention_logit_grows``: without qk-layernorm (and without z-loss), the largest
  attention logit (``AttentionLogits``, max over blocks, at the end of training, or at the
  last finite point of a diverged run) at the largest learning rate is at least
  ``LOGIT_GROWTH = 10`` times its value at the smallest (their Fig. 1 shows growth by
  more than two orders of magnitude over the grid; one order leaves room for the short
  runs here);
* ``qk_layernorm_bounds_logits``: at the largest learning rate, the largest attention logit
  with qk-layernorm is at most ``LOGIT_BOUND = 0.1`` of that without (the normalised
  queries and keys bound it by ``tau d g^2``, ``g`` the LayerNorm gains; their Fig. 1
  shows orders of magnitude between the two at high learning rates, one is asked here);
* ``qk_layernorm_lowers_sensitivity``: the LR sensitivity with qk-layernorm is at most
  ``SENSITIVITY_RATIO = 0.8`` of that without (z-loss off in both): a "clear margin",
  20%; Fig. 1 shows a larger gap at their scale;
* ``log_z_drifts_without_z_loss``: without the z-loss, the most negative final mean
  ``log Z`` over the learning rates (runs that did not diverge) is at most
  ``LOG_Z_DRIFT = -5`` (Fig. 4: tens of nats negative at their scale; ``-5`` already makes
  the largest softmax output ``e^{-5}``-times smaller than the logit of the label
  suggests, far from the self-normalised 0);
* ``z_loss_keeps_log_z``: with the z-loss, the largest ``|mean log Z|`` over the learning
  rates is at most ``LOG_Z_KEPT = 1`` nat (the penalty ``1e-4 (log Z)^2``: Fig. 4 shows it
  held near 0);
* ``sensitivity_grows_with_width``: the unmitigated model's LR sensitivity increases from
  the narrowest to the widest width by at least ``WIDTH_GROWTH = 0.05`` nats (their Fig. 1
  and 9: it grows with model size; 0.05 nats is about 5% of the sensitivities measured
  here, above the run-to-run spread of a single seed's losses, ~0.01 nats at the best
  learning rates);
* ``mitigations_flatten_width_growth``: with qk-layernorm and the z-loss it increases by
  at most ``FLATTER = 0.5`` of the unmitigated increase ("much less": at least halved; a
  decrease passes). Without an unmitigated increase the claim has nothing to compare
  and fails (its measured value is NaN).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import dynamics as td
from dynamics import losses
from dynamics.observables_transformer import AttentionLogits, LogPartition
from experiments.common import Claim

NAME = "small-scale-proxies"
TITLE = ("Small-scale proxies for Transformer training instabilities (Wortsman et al. 2023): "
         "attention-logit growth, output-logit divergence, LR sensitivity")

LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)   # the paper's grid, half-decades
def diverged(ds):
    """``ds.diverged`` as booleans (stored as 0/1 floats, NaN where not run)."""
    return ds.diverged == 1


PRESETS = {
    "quick": dict(widths=(16, 64), steps=240, batch_size=32, n_train=4096, seq_len=16,
                  lrs=LRS, seeds=1, configs=((False, False), (True, False), (True, True))),
    "full": dict(widths=(16, 32, 64), steps=320, batch_size=32, n_train=5120,
                 seq_len=16, lrs=LRS, seeds=1),
}
# Running times (SECONDS, see experiments/__init__.py), measured on 2 CPU cores shared
# with other jobs (load ~4): quick 238 s, full 636 s.
SECONDS = {"quick": 240, "full": 640}

VOCAB = 32
DEPTH = 2
WARMUP_FRACTION = 0.1
WEIGHT_DECAY = 1e-4      # the paper's independent decay
LOGS = 2                 # log intervals per run (the loss is measured on every sequence)
PROBE = 256              # sequences on which the attention logits are measured
# (qk_layernorm, z_loss) configurations: the claims need the unmitigated model and the one
# with both mitigations at every width, qk-layernorm alone at the widest; qk-layernorm off
# with the z-loss on is in the figure only, and left out of the quick preset
CONFIGS = ((False, False), (True, False), (True, True), (False, True))

LOGIT_GROWTH = 10.0      # max attention logit, largest over smallest lr, no qk-layernorm
LOGIT_BOUND = 0.1        # max attention logit at the largest lr, with / without qk-LN
SENSITIVITY_RATIO = 0.8  # LR sensitivity with / without qk-layernorm, at most
LOG_Z_DRIFT = -5.0       # most negative mean log Z without z-loss, at most
LOG_Z_KEPT = 1.0         # largest |mean log Z| with z-loss, at most
WIDTH_GROWTH = 0.05      # nats: increase of the unmitigated sensitivity, narrow to wide
FLATTER = 0.5            # the mitigated increase, at most this fraction of the unmitigated


def heads_of(width: int) -> int:
    """Heads of dimension 8 (at least 2): the paper's head dimension is 64 at widths of
    hundreds; 8 keeps several heads at width 16."""
    return max(2, width // 8)


def make_spec(width, qk_layernorm, z_loss, steps, batch_size, n_train, seq_len, lr=1e-3):
    task = td.tasks.markov_chain(vocab_size=VOCAB, seq_len=seq_len, n_train=n_train,
                                 n_test=16, seed=0,
                                 loss="cross_entropy_z_loss" if z_loss else "cross_entropy")
    model = td.Transformer(vocab_size=VOCAB, width=width, depth=DEPTH, heads=heads_of(width),
                           qk_layernorm=qk_layernorm, bias=False,
                           parametrization="standard")
    optimizer = td.optimizers.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, schedule="cosine",
                                    warmup_fraction=WARMUP_FRACTION, clip_norm=1.0,
                                    weight_decay=WEIGHT_DECAY,
                                    weight_decay_coupling="independent")
    return td.Spec(model, task, optimizer, steps=steps, batch_size=batch_size,
                   log_every=max(1, steps // LOGS),
                   observables=("loss", AttentionLogits(probe_size=min(PROBE, n_train)),
                                LogPartition()))


def run(widths, steps, batch_size, n_train, seq_len, lrs, seeds, configs=CONFIGS):
    parts = []
    for qk, z_loss in configs:
        for width in widths:
            spec = make_spec(width, qk, z_loss, steps, batch_size, n_train, seq_len)
            ds = td.sweep(spec, seed=list(range(seeds)), lr=list(lrs))
            parts.append(_summarise(ds, z_loss).expand_dims(
                z_loss=[z_loss], qk_layernorm=[qk], width=[width]))
    # a configuration left out of ``configs`` is NaN (``diverged`` is 0/1 floats for that)
    return xr.combine_by_coords(parts, join="outer").assign_attrs(
        steps=steps, batch_size=batch_size, seq_len=seq_len, vocab_size=VOCAB, depth=DEPTH,
        bayes_cross_entropy=td.tasks.markov_chain_bayes_loss(spec.task))


def _last_finite(da):
    """The last finite value along ``step`` (NaN if none): a diverged run's last value
    before it diverged."""
    ok = np.isfinite(da)
    index = (ok * np.arange(da.sizes["step"])).argmax("step")
    return da.isel(step=index).where(ok.any("step")).drop_vars("step", errors="ignore")


def _summarise(ds, z_loss):
    """Per run: the initial and final cross-entropy, divergence, the final largest attention
    logit (max over blocks) and the final mean log Z."""
    ce = ds.train_loss
    if z_loss:
        ce = ce - losses.Z_LOSS_COEFFICIENT * ds.z_loss
    return xr.Dataset({
        "initial_loss": ce.isel(step=0).drop_vars("step"),
        "final_loss": _last_finite(ce),
        "diverged": (ds.diverged_at >= 0).astype(float),
        "max_attention_logit": _last_finite(ds.max_attention_logit.max("block")),
        "log_z_mean": _last_finite(ds.log_z_mean),
    })


def lr_sensitivity(final_loss, initial_loss, diverged=None, dim="lr"):
    """Wortsman et al. (2023), eq. 1 (module doc): the mean over the grid ``dim`` of
    ``min(final, initial) - min over the grid of final``; a diverged (or non-finite) run
    counts as ``initial``. Keeps every other dimension."""
    final = final_loss.where(np.isfinite(final_loss), np.inf)
    if diverged is not None:
        final = final.where(~diverged, np.inf)
    capped = np.minimum(final, initial_loss)
    return (capped - capped.min(dim)).mean(dim)


def sensitivities(ds):
    """LR sensitivity per width, qk-layernorm and z-loss (mean over seeds of the losses)."""
    final = ds.final_loss.where(~diverged(ds), np.inf).mean("seed")
    return lr_sensitivity(final, ds.initial_loss.mean("seed"))


def _largest_lr_logit(ds, qk, width):
    logit = ds.max_attention_logit.sel(z_loss=False, qk_layernorm=qk, width=width)
    return float(logit.max("seed").isel(lr=-1))


def _logit_ratio(ds, qk, width):
    logit = ds.max_attention_logit.sel(z_loss=False, qk_layernorm=qk, width=width).max("seed")
    return float(logit.isel(lr=-1) / logit.isel(lr=0))


def check(ds) -> list[Claim]:
    wide, narrow = ds.width.values[-1], ds.width.values[0]
    sens = sensitivities(ds)
    plain = sens.sel(qk_layernorm=False, z_loss=False)
    both = sens.sel(qk_layernorm=True, z_loss=True)
    converged = ~diverged(ds)
    log_z_off = ds.log_z_mean.sel(z_loss=False, width=wide).where(
        converged.sel(z_loss=False, width=wide))
    log_z_on = ds.log_z_mean.sel(z_loss=True, width=wide).where(
        converged.sel(z_loss=True, width=wide))
    growth_plain = float(plain.sel(width=wide) - plain.sel(width=narrow))
    growth_both = float(both.sel(width=wide) - both.sel(width=narrow))
    return [
        Claim("attention_logit_grows", _logit_ratio(ds, False, wide), LOGIT_GROWTH, ">=",
              description=f"width {wide}, no qk-layernorm, no z-loss: largest attention "
              "logit at lr 3e-1 / at lr 3e-4 (end of training or last finite point)"),
        Claim("qk_layernorm_bounds_logits", _largest_lr_logit(ds, True, wide)
              / _largest_lr_logit(ds, False, wide), LOGIT_BOUND, "<=",
              description=f"width {wide}, no z-loss, lr 3e-1: largest attention logit with "
              "qk-layernorm / without"),
        Claim("qk_layernorm_lowers_sensitivity",
              float(sens.sel(qk_layernorm=True, z_loss=False, width=wide)
                    / sens.sel(qk_layernorm=False, z_loss=False, width=wide)),
              SENSITIVITY_RATIO, "<=",
              description=f"width {wide}, no z-loss: LR sensitivity (eq. 1) with qk-layernorm "
              "/ without"),
        Claim("log_z_drifts_without_z_loss", float(log_z_off.min()), LOG_Z_DRIFT, "<=",
              description=f"width {wide}, no z-loss: most negative final mean log Z over the "
              "learning rates and qk settings (runs that did not diverge)"),
        Claim("z_loss_keeps_log_z", float(np.abs(log_z_on).max()), LOG_Z_KEPT, "<=",
              description=f"width {wide}, z-loss: largest |final mean log Z| over the "
              "learning rates and qk settings (runs that did not diverge)"),
        Claim("sensitivity_grows_with_width", growth_plain, WIDTH_GROWTH, ">=",
              description=f"no qk-layernorm, no z-loss: LR sensitivity at width {wide} minus "
              f"at width {narrow} (nats)"),
        # without an unmitigated increase there is nothing to flatten: NaN, a failed claim
        Claim("mitigations_flatten_width_growth",
              growth_both if growth_plain > 0 else float("nan"),
              FLATTER * max(growth_plain, 0.0), "<=",
              description=f"qk-layernorm and z-loss: LR sensitivity at width {wide} minus at "
              f"width {narrow} (nats), at most {FLATTER} times the unmitigated increase"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    wide = ds.width.values[-1]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    styles = {(False, False): ("C3", "-", "neither"), (True, False): ("C0", "-", "qk-LN"),
              (False, True): ("C3", "--", "z-loss"), (True, True): ("C0", "--", "both")}
    for (qk, z), (color, ls, label) in styles.items():
        sub = ds.sel(width=wide, qk_layernorm=qk, z_loss=z)
        axes[0].loglog(ds.lr, sub.final_loss.where(~diverged(sub)).mean("seed"), "o", ls=ls,
                       color=color, ms=3, label=label)
        axes[1].loglog(ds.lr, sub.max_attention_logit.max("seed"), "o", ls=ls, color=color,
                       ms=3, label=label)
        axes[2].semilogx(ds.lr, sub.log_z_mean.mean("seed"), "o", ls=ls, color=color, ms=3,
                         label=label)
    axes[0].axhline(ds.attrs["bayes_cross_entropy"], color="k", lw=0.8, ls=":",
                    label="Bayes loss")
    axes[0].set(xlabel="learning rate", ylabel="final training cross-entropy",
                title=f"width {wide}: final loss")
    axes[1].set(xlabel="learning rate", ylabel="max attention logit",
                title="attention-logit growth")
    axes[2].set(xlabel="learning rate", ylabel="mean log Z", title="output log-partition")
    sens = sensitivities(ds)
    for (qk, z), (color, ls, label) in styles.items():
        axes[3].semilogx(ds.width, sens.sel(qk_layernorm=qk, z_loss=z), "o", ls=ls,
                         color=color, label=label, base=2)
    axes[3].set(xlabel="width", ylabel="LR sensitivity (eq. 1)", title="LR sensitivity")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(TITLE, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
