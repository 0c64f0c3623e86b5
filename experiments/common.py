"""What every experiment shares: claims and the files a run writes."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import tempfile
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import dynamics  # noqa: E402
from dynamics import sweeps  # noqa: E402
from dynamics.coordinate_check import loglog_slope  # noqa: E402,F401  (public)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checkable statement: ``measured`` compared with ``target`` by ``relation``
    (``"<="``, ``">="``, or ``"within"`` for ``|measured - target| <= tolerance``)."""

    name: str
    measured: float
    target: float
    relation: str
    tolerance: float = 0.0
    description: str = ""

    @property
    def passed(self) -> bool:
        m, t = float(self.measured), float(self.target)
        if not math.isfinite(m):
            return False
        if self.relation == "<=":
            return m <= t
        if self.relation == ">=":
            return m >= t
        if self.relation == "within":
            return abs(m - t) <= self.tolerance
        raise ValueError(f"relation must be '<=', '>=' or 'within', got {self.relation!r}")

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "measured": float(self.measured),
                "target": float(self.target), "passed": self.passed}


def second_half(ds):
    """The log points of the second half of training (from the middle one on), of a
    Dataset or DataArray with a ``step`` dimension."""
    return ds.isel(step=slice(ds.sizes["step"] // 2, None))


def check_writable(out: pathlib.Path) -> None:
    """Refuse an output folder that cannot be written, before hours of computing."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"output folder {str(out)!r} is not writable ({err.strerror or err}); "
                         "choose another (--out on the command line)") from None


def execute(module, preset: str = "quick", out: str | pathlib.Path | None = None, *,
            progress: bool = True) -> dict:
    """Run experiment ``module`` with ``preset``; write results.nc, figure.png and
    summary.json to ``out`` and return the summary. With ``progress``, its sweeps show a
    progress bar (``dynamics.sweeps.show_progress``)."""
    if preset not in module.PRESETS:
        raise ValueError(f"preset must be one of {sorted(module.PRESETS)}, got {preset!r}")
    out = pathlib.Path(out or f"results/{module.NAME}")
    check_writable(out)
    start = time.perf_counter()
    with sweeps.show_progress(progress):
        ds = module.run(**module.PRESETS[preset])
    seconds = time.perf_counter() - start
    claims = module.check(ds)
    ds.attrs["experiment"] = module.NAME
    ds.attrs["preset"] = preset
    dynamics.save(ds, out / "results.nc")
    module.plot(ds, out / "figure.png")
    plt.close("all")
    summary = {
        "experiment": module.NAME,
        "title": module.TITLE,
        "preset": preset,
        "seconds": round(seconds, 2),
        "passed": all(c.passed for c in claims),
        "claims": [c.as_dict() for c in claims],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def best_grid_point(final_loss, diverged, dim: str = "lr", over: str = "seed"):
    """``(log2 of the best value of dim, loss there)``: the grid point of ``dim`` (a
    learning rate, by default) with the least ``final_loss`` averaged over ``over``, a
    diverged run counting as infinitely bad (so a grid point where any seed diverged is
    never the best). Both results keep every other dimension."""
    loss = final_loss.where(~diverged, np.inf).mean(over).fillna(np.inf)
    best = np.log2(loss[dim].isel({dim: loss.argmin(dim)}))
    return best.drop_vars(dim, errors="ignore"), loss.min(dim)
