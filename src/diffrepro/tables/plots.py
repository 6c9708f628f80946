"""PNG pictures a person can open: data/sample views, loss curves, bound terms, inpainting panels."""
from __future__ import annotations

import numpy as np

from ..io import save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_uint8_images(x: np.ndarray) -> np.ndarray:
    """[N x C x H x W] in [-1, 1] -> uint8 [N x H x W x C]."""
    x = np.clip((x + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return x.transpose(0, 2, 3, 1)


def grid(x: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile [N x C x H x W] images in [-1, 1] into one uint8 [rows*H x cols*W x C] picture."""
    imgs = to_uint8_images(x)
    n, h, w, c = imgs.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = imgs[i]
    return out


def show_data(path, x: np.ndarray, data_type: str, title: str, reference: np.ndarray | None = None,
              max_items: int = 100) -> None:
    """Scatter for points (over the reference data when given), image grid, or binary raster."""
    plt = _plt()
    if data_type == "points":
        fig, ax = plt.subplots(figsize=(5, 5))
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=2, c="0.75", label="data")
        ax.scatter(x[:, 0], x[:, 1], s=2, c="C0", label=title)
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4)
    elif data_type == "binary":
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(x[:50], cmap="gray_r", aspect="auto", interpolation="nearest")
        ax.set_xlabel("bin")
        ax.set_ylabel("sequence")
    else:
        picture = grid(x[:max_items])
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255)
        ax.axis("off")
    ax.set_title(title)
    save_figure(path, fig)


def loss_curve(path, steps, losses, title: str) -> None:
    """The loss record against the step. A short record (a few logged rows: a tiny or a just-started
    run) is drawn with a marker per row, so that a lone row shows; none at all says so."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses, lw=1, marker="o" if len(steps) <= 30 else None, ms=4)
    if len(steps) == 0:
        ax.text(0.5, 0.5, "no training steps logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if np.all(np.asarray(losses) > 0):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    save_figure(path, fig)


def bound_terms(path, t, term_bits, unit: str, title: str, rate_distortion=None) -> None:
    """The bound's per-step terms along t and, when given (rate, distortion, distortion unit),
    DDPM's distortion-vs-rate curve."""
    plt = _plt()
    ncols = 2 if rate_distortion is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(t, np.maximum(term_bits, 1e-12), lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel(f"term ({unit})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if rate_distortion is not None:
        rate, distortion, dist_unit = rate_distortion
        ax = axes[0, 1]
        ax.plot(rate, distortion, lw=1)
        ax.set_xlabel(f"rate ({unit})")
        ax.set_ylabel(f"distortion, {dist_unit}")
        ax.set_title("rate-distortion along the reverse chain")
        ax.grid(alpha=0.3)
    save_figure(path, fig)


def inpaint_panel(path, rows: dict, data_type: str, title: str) -> None:
    """rows: mask name (or "denoise") -> (original, masked or noisy, filled) arrays; columns side by side."""
    plt = _plt()
    names = list(rows)
    fig, axes = plt.subplots(len(names), 3, figsize=(9, 3 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        labels = ("original", "noisy", "denoised") if name == "denoise" else ("original", "masked", "inpainted")
        for c, (label, x) in enumerate(zip(labels, rows[name])):
            ax = axes[r, c]
            if data_type == "points":
                ax.scatter(x[:, 0], x[:, 1], s=3)
                ax.set_aspect("equal")
            elif data_type == "binary":
                ax.imshow(x[:32], cmap="gray_r", aspect="auto", interpolation="nearest")
            else:
                picture = grid(x[:16], ncols=4)
                ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255)
                ax.axis("off")
            ax.set_title(f"{name}: {label}")
    fig.suptitle(title)
    save_figure(path, fig)


def progressive_panel(path, snapshots, data_type: str, title: str) -> None:
    """Snapshots (t, x_t, predicted x_0 or None) along the reverse chain, one column per t.

    Images: the top row block shows x_t, the bottom the predicted x_0 (when the process has one).
    Points and binary data: x_t only.
    """
    plt = _plt()
    cols = len(snapshots)
    rows = 2 if data_type == "image" and snapshots[0][2] is not None else 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows + 0.4), squeeze=False)
    for c, (t, x_t, pred) in enumerate(snapshots):
        for r, (label, x) in enumerate((("x_t", x_t), ("x̂_0", pred))[:rows]):
            ax = axes[r, c]
            x = x.detach().cpu().numpy()
            if data_type == "points":
                ax.scatter(x[:, 0], x[:, 1], s=1)
                ax.set_xlim(-3, 3)
                ax.set_ylim(-3, 3)
                ax.set_xticks([])
                ax.set_yticks([])
            elif data_type == "binary":
                ax.imshow(x[:20], cmap="gray_r", aspect="auto", interpolation="nearest", vmin=0, vmax=1)
                ax.axis("off")
            else:
                picture = grid(np.clip(x[:8], -1, 1), ncols=2)
                ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255)
                ax.axis("off")
            ax.set_title(f"{label}, t={t}", fontsize=8)
    fig.suptitle(title)
    save_figure(path, fig)


def schedule_panel(path, sched, title: str) -> None:
    """β_t (learned or fixed) and SD-2015's bounds on the reverse-step entropy H_q(X_{t-1} | X_t)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(sched["t"], sched["beta"], lw=1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("t")
    axes[0].set_ylabel("β_t")
    axes[0].set_title("forward schedule")
    axes[0].grid(alpha=0.3)
    finite = np.isfinite(sched["entropy_lower_nats"])
    axes[1].plot(sched["t"], sched["entropy_upper_nats"], lw=1, label="upper: H_q(X_t | X_t-1)")
    axes[1].plot(sched["t"][finite], sched["entropy_lower_nats"][finite], lw=1, label="lower")
    axes[1].fill_between(sched["t"][finite], sched["entropy_lower_nats"][finite],
                         sched["entropy_upper_nats"][finite], alpha=0.2)
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("nats per dimension")
    axes[1].set_title("bounds on H_q(X_t-1 | X_t)")
    axes[1].legend(fontsize=8)
    axes[1].grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(path, fig)


def training_samples_panel(path, rows, data_type: str, title: str) -> None:
    """Samples drawn from the EMA weights along training, one row per time: [(step, examples)], the
    same draws each time. Images: a strip of the examples per row; points: a scatter per row;
    binary data: a raster per row."""
    plt = _plt()
    n = len(rows)
    wide = data_type == "image"
    fig, axes = plt.subplots(n, 1, figsize=(8 if wide else 4, (1.3 if wide else 2.2) * n + 0.5), squeeze=False)
    for (step, x), ax in zip(rows, axes[:, 0]):
        if data_type == "points":
            ax.scatter(x[:, 0], x[:, 1], s=1)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
        elif data_type == "binary":
            ax.imshow(x[:16], cmap="gray_r", aspect="auto", interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            picture = grid(np.clip(x, -1, 1), ncols=len(x))
            ax.imshow(picture.squeeze(-1) if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_ylabel(f"step {step}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    save_figure(path, fig)


def quality_curve(path, curve, nll_unit: str, fid_space: str, title: str) -> None:
    """Quality over training (Improved DDPM's figure): FID and the bound of each kept checkpoint
    against its training step."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(curve["step"], curve["fid"], marker="o", lw=1)
    axes[0].set_ylabel(f"FID ({fid_space})")
    axes[0].set_title("FID against the test set")
    axes[1].plot(curve["step"], curve["nll"], marker="o", lw=1, color="C1")
    axes[1].set_ylabel(f"bound ({nll_unit})")
    axes[1].set_title("negative log-likelihood bound on test data")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(path, fig)
