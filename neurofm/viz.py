"""Plots shared by the CLI, reports, benchmarks and notebooks.

Each function takes data and a path, draws one figure and writes it (PNG); nothing here
reads files or runs models. Figures are built with matplotlib's object API
(``matplotlib.figure.Figure``), never pyplot: no global backend is switched and no window
opens, so the same code runs on servers, in CI and inside a notebook's own plotting.
"""

from __future__ import annotations

from pathlib import Path


def figure(**kwargs):
    """A new ``matplotlib.figure.Figure`` (``figsize=...``) drawn off-screen."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save(fig, path, title: str | None = None) -> Path:
    """Title, lay out and write ``fig`` (creating the folder); returns the path."""
    path = Path(path)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_tokens(tokens, path, title: str, sfreq: float) -> Path:
    """Two panels: the first window's traces, and RMS per token over the whole grid."""
    import numpy as np

    x = tokens.x.numpy()  # (B, S, N, P)
    rms = np.sqrt((x**2).mean(-1))  # (B, S, N)
    grid = np.concatenate(list(rms), axis=1)  # S x (B*N): every patch of the recording
    names = tokens.names[0]
    fig = figure(figsize=(14, 7))
    ax0, ax1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    shown = list(range(0, len(names), max(1, len(names) // 12)))
    window = x[0].reshape(x.shape[1], -1)
    t = np.arange(window.shape[1]) / sfreq
    for k, s in enumerate(shown):
        ax0.plot(t, window[s] / 4 - 3 * k, lw=0.6, color="k")
    ax0.set_yticks([-3 * k for k in range(len(shown))], [names[s] for s in shown])
    ax0.set_xlabel("seconds (window 0, after the recipe)")
    ax0.set_title("signal, model units (100 uV)")
    im = ax1.imshow(grid, aspect="auto", cmap="magma", interpolation="nearest")
    ax1.set_yticks(range(0, len(names), 4), names[::4], fontsize=7)
    ax1.set_xlabel(
        f"patch ({tokens.shape[0]} windows x {tokens.shape[2]} patches of {tokens.shape[3]} samples)"
    )
    ax1.set_title("token grid: RMS per channel patch")
    fig.colorbar(im, ax=ax1, label="RMS (model units)")
    return save(fig, path, title)


def plot_loglog(rows: list[dict], path, title: str, *, x: str, series: str, panels) -> Path:
    """One log-log panel per ``(key, label)`` in ``panels``: ``rows[key]`` against
    ``rows[x]``, one line per value of ``rows[series]`` (e.g. time and memory against
    tokens per window, full vs divided attention)."""
    fig = figure(figsize=(5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    groups = list(dict.fromkeys(r[series] for r in rows))
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for group, style in zip(groups, ("o-", "s--", "^:", "d-."), strict=False):
            pts = [r for r in rows if r[series] == group]
            ax.loglog([r[x] for r in pts], [r[key] for r in pts], style, label=str(group))
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    return save(fig, path, title)


#: metrics drawn by :func:`plot_curves`, in panel order, when a run logged them
CURVE_PANELS = (
    ("loss", ("loss",), "log"),
    ("masked-code accuracy", ("accuracy", "majority"), "linear"),
    ("spectrum losses", ("amplitude", "phase", "commitment"), "log"),
    ("codebook use", ("usage", "used"), "linear"),
    ("dead codes", ("dead",), "linear"),
    ("perplexity", ("perplexity",), "linear"),
    ("learning rate", ("lr",), "linear"),
)


def plot_curves(rows: list[dict], path, title: str | None = None) -> Path:
    """A training run's curves against the step: one panel per kind of metric logged."""
    panels = [(name, [k for k in keys if any(k in r for r in rows)], scale)
              for name, keys, scale in CURVE_PANELS]  # fmt: skip
    panels = [p for p in panels if p[1]]
    fig = figure(figsize=(4.0 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, keys, scale) in zip(axes, panels, strict=True):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=key, lw=1.2)
        positive = all(r.get(k, 1) > 0 for r in rows for k in keys if k in r)
        ax.set_yscale(scale if positive else "linear")
        ax.set_title(name)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save(fig, path, title)
