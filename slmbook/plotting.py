"""Plots the chapters share. Each function draws on a matplotlib Axes and returns it.

Functions take an optional ``ax``; when it is ``None`` a new figure is created.
"""

from __future__ import annotations

from collections import Counter

import matplotlib.pyplot as plt
import torch


def _char_label(c: str) -> str:
    """A visible label for a character: '␣' for a space, escapes for other whitespace."""
    if c == " ":
        return "␣"
    return repr(c)[1:-1] if c.isspace() or not c.isprintable() else c


def _axes(ax: plt.Axes | None, figsize: tuple[float, float] = (8, 4)) -> plt.Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_char_frequencies(text: str, *, top: int = 40, ax: plt.Axes | None = None) -> plt.Axes:
    """Bar chart of the ``top`` most frequent characters of ``text``, as percentages.

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    if not text:
        raise ValueError("text is empty: nothing to count")
    ax = _axes(ax, (10, 3.5))
    common = Counter(text).most_common(top)
    labels = [_char_label(c) for c, _ in common]
    ax.bar(range(len(common)), [100 * n / len(text) for _, n in common], color="tab:blue")
    ax.set_xticks(range(len(common)), labels, fontfamily="monospace")
    ax.set_ylabel("% of all characters")
    ax.set_title(f"The {len(common)} most frequent characters")
    return ax


def plot_bigram_heatmap(
    probs: torch.Tensor, labels: list[str], *, ax: plt.Axes | None = None
) -> plt.Axes:
    """Heat map of a (K, K) next-token probability matrix: row = current, column = next.

    See chapter 1, "The data: X and Y" (book/01_data.ipynb).
    """
    if probs.ndim != 2 or probs.shape[0] != probs.shape[1] or probs.shape[0] != len(labels):
        raise ValueError(
            f"probs must be (K, K) with K = len(labels) = {len(labels)}, got {tuple(probs.shape)}"
        )
    ax = _axes(ax, (7, 6))
    image = ax.imshow(probs.numpy(), cmap="Blues")
    shown = [_char_label(c) for c in labels]
    ax.set_xticks(range(len(labels)), shown, fontfamily="monospace", fontsize=8)
    ax.set_yticks(range(len(labels)), shown, fontfamily="monospace", fontsize=8)
    ax.set_xlabel("next character")
    ax.set_ylabel("current character")
    ax.figure.colorbar(image, ax=ax, label="P(next | current)")
    return ax


# --- chapter 6: loss surfaces and optimizer trajectories -------------------------------


def plot_surface_contours(
    surface, *, ax: plt.Axes | None = None, levels: int = 25, n: int = 200
) -> plt.Axes:
    """Contours of a 2-D loss (``slmbook.surfaces.Surface``), log-spaced, minimum starred.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    import numpy as np

    from slmbook.surfaces import grid

    ax = _axes(ax, figsize=(6, 4.5))
    X, Y, Z = grid(surface, n=n)
    lo = max(float(Z.min()), 1e-3)
    ax.contour(X, Y, Z, levels=np.geomspace(lo, float(Z.max()), levels), cmap="viridis",
               linewidths=0.7)
    ax.plot(*surface.minimum, marker="*", color="black", markersize=12, linestyle="none")
    ax.set(xlim=surface.xlim, ylim=surface.ylim, xlabel="$x$", ylabel="$y$", title=surface.name)
    return ax


def plot_trajectories(
    surface, paths: dict, *, ax: plt.Axes | None = None, title: str | None = None,
    contours: bool = True,
) -> plt.Axes:
    """Draw optimizer trajectories (``{label: (k, 2) array}``) over a surface's contours.

    Points outside the plot range (a diverging run) are clipped by the axes.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    import numpy as np

    if contours:
        ax = plot_surface_contours(surface, ax=ax)
    ax = _axes(ax)
    for label, path in paths.items():
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], marker="o", markersize=2.5, linewidth=1.2, label=label)
    ax.plot(*paths[next(iter(paths))][0], marker="s", color="red", linestyle="none")  # start
    ax.set(xlim=surface.xlim, ylim=surface.ylim)
    if title is not None:
        ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return ax


def animate_learning_rates(
    surface, make_optimizer, lrs, *, steps: int = 50, start=None, figsize=(10, 4), dpi: int = 72,
    **kw,
):
    """One frame per learning rate: trajectory on the surface and loss per step.

    Returns a ``matplotlib.animation.FuncAnimation``; ``anim.to_jshtml()`` gives
    an HTML player with a slider that works without a kernel.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    import numpy as np
    from matplotlib.animation import FuncAnimation

    from slmbook.surfaces import path_losses, run_optimizer

    paths = [run_optimizer(surface, make_optimizer, steps=steps, start=start, lr=lr, **kw)
             for lr in lrs]
    fig, (ax_path, ax_loss) = plt.subplots(1, 2, figsize=figsize, dpi=dpi)  # dpi sets the HTML size
    plot_surface_contours(surface, ax=ax_path)
    (line,) = ax_path.plot([], [], marker="o", markersize=2.5, color="tab:red")
    (curve,) = ax_loss.plot([], [], color="tab:red")
    start_loss = float(path_losses(surface, paths[0][:1])[0])
    ax_loss.set(xlim=(0, steps), ylim=(1e-6, start_loss * 1e3), yscale="log",
                xlabel="step", ylabel="loss", title="loss per step")
    fig.tight_layout()

    def draw(i):
        path = paths[i]
        line.set_data(path[:, 0], path[:, 1])
        losses = np.maximum(path_losses(surface, path), 1e-300)
        curve.set_data(np.arange(len(losses)), losses)
        name = getattr(make_optimizer, "__name__", "optimizer")
        ax_path.set_title(f"{surface.name}: {name}, lr = {lrs[i]:.3g}")
        return line, curve

    anim = FuncAnimation(fig, draw, frames=len(lrs), blit=False)
    plt.close(fig)  # the caller shows anim.to_jshtml(); avoid a duplicate still image
    return anim


# --- chapter 5: a scalar computation graph with its gradients --------------------------


def _graph_layout(root) -> tuple[list, dict[int, tuple[float, float]], int]:
    """Nodes (inputs first), each node's (x, y) by ``id``, and the number of columns.

    A node's column is its longest distance from an input (an input sits just
    left of its first user); within a column, nodes follow their users' heights.
    """
    order = root.topological_order()  # inputs first
    users: dict[int, list] = {id(node): [] for node in order}
    for node in order:
        for parent in node.parents:
            users[id(parent)].append(node)
    depth: dict[int, int] = {}
    for node in order:
        depth[id(node)] = 1 + max((depth[id(p)] for p in node.parents), default=-1)
    for node in reversed(order):
        if not node.parents and users[id(node)]:
            depth[id(node)] = min(depth[id(u)] for u in users[id(node)]) - 1
    columns: dict[int, list] = {}
    for node in order:
        columns.setdefault(depth[id(node)], []).append(node)
    pos: dict[int, tuple[float, float]] = {}
    for d in sorted(columns, reverse=True):  # right to left: follow the users' heights
        nodes = columns[d]
        target = [
            sum(pos[id(u)][1] for u in users[id(n)]) / max(len(users[id(n)]), 1)
            if users[id(n)] else 0.0
            for n in nodes
        ]
        nodes = [n for _, _, n in sorted(zip(target, range(len(nodes)), nodes), reverse=True)]
        centre = sum(target) / len(target)
        for k, node in enumerate(nodes):
            pos[id(node)] = (3.0 * d, centre + (len(nodes) - 1) / 2 - k)
    return order, pos, max(columns) + 1


_BOX_W, _BOX_H = 1.7, 0.72


def _draw_value(ax: plt.Axes, node, pos: dict, grads: bool) -> None:
    """One value's box and, for a computed value, its operation's circle and arrows."""
    from matplotlib.patches import Circle, FancyBboxPatch

    x, y = pos[id(node)]
    text = f"{node.label or '·'}\ndata = {node.data:.4g}"
    if grads:
        text += f"\ngrad = {node.grad:.4g}"
    color = "#dbe9f6" if not node.parents else "#fdebd0"
    ax.add_patch(FancyBboxPatch((x - _BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H,
                                boxstyle="round,pad=0.05", facecolor=color,
                                edgecolor="black", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=8, fontfamily="monospace")
    if not node.parents:
        return
    ox, oy = x - 1.4, y  # the operation's circle, left of its result
    ax.add_patch(Circle((ox, oy), 0.28, facecolor="white", edgecolor="black", linewidth=0.8))
    ax.text(ox, oy, {"*": "×"}.get(node.op, node.op), ha="center", va="center", fontsize=9)
    ax.annotate("", xy=(x - _BOX_W / 2 - 0.05, y), xytext=(ox + 0.28, oy),
                arrowprops={"arrowstyle": "->", "linewidth": 0.8})
    for parent in node.parents:
        px, py = pos[id(parent)]
        ax.annotate("", xy=(ox - 0.28, oy), xytext=(px + _BOX_W / 2 + 0.05, py),
                    arrowprops={"arrowstyle": "->", "linewidth": 0.8, "color": "0.35",
                                "shrinkB": 2})


def plot_scalar_graph(root, *, ax: plt.Axes | None = None, grads: bool = True) -> plt.Axes:
    """Draw the computation graph of a :class:`slmbook.autograd.Value`, inputs on the left.

    Each value is a box with its label, ``data`` and (if ``grads``) ``grad``;
    each operation is a circle between its inputs and its result. Columns are
    the longest distance from an input, so every arrow points to the right.

    See chapter 5, "The backward pass" (book/05_backward.ipynb).
    """
    order, pos, n_cols = _graph_layout(root)
    ys = [p[1] for p in pos.values()]
    ax = _axes(ax, figsize=(2.4 * n_cols + 1, 1.1 * (max(ys) - min(ys)) + 2.2))
    for node in order:
        _draw_value(ax, node, pos, grads)
    ax.set_xlim(-1.2, 3.0 * (n_cols - 1) + 1.2)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


# --- chapters 2 and 3: activations, attention maps, next-token distributions ------------


def plot_activation_histograms(
    stats: dict, *, ax: plt.Axes | None = None, title: str | None = None, bins: int = 60
) -> plt.Axes:
    """Overlaid histograms of each layer's activations (from :func:`slmbook.init.activation_stats`).

    See chapter 2, "Parameters and initialization" (book/02_parameters.ipynb).
    """
    if not stats:
        raise ValueError("stats is empty: pass the dict returned by slmbook.init.activation_stats")
    ax = _axes(ax, (6, 3.5))
    lo = min(float(s.samples.min()) for s in stats.values())
    hi = max(float(s.samples.max()) for s in stats.values())
    edges = torch.linspace(lo, hi if hi > lo else lo + 1, bins + 1).numpy()
    for name, s in stats.items():
        label = f"{name.removeprefix('transformer.')} (std {s.std:.3g})"
        ax.hist(s.samples.numpy(), bins=edges, histtype="step", density=True, label=label)
    ax.set_xlabel("activation value")
    ax.set_ylabel("density")
    ax.set_title(title or "Activations per layer")
    ax.legend(fontsize="x-small")
    return ax


def plot_attention_map(
    weights: torch.Tensor,
    tokens: list[str] | None = None,
    *,
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> plt.Axes:
    """Heat map of one head's (T, T) attention weights: row = query position, column = key.

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights must be (T, T) for one head, got {tuple(weights.shape)}")
    T = weights.shape[0]
    if tokens is not None and len(tokens) != T:
        raise ValueError(f"got {len(tokens)} token labels for T = {T} positions")
    ax = _axes(ax, (5, 4.5))
    image = ax.imshow(weights.detach().float().numpy(), cmap="viridis", vmin=0.0)
    if tokens is not None:
        shown = [_char_label(t) for t in tokens]
        ax.set_xticks(range(T), shown, fontfamily="monospace", fontsize=7)
        ax.set_yticks(range(T), shown, fontfamily="monospace", fontsize=7)
    ax.set_xlabel("key position (attended to)")
    ax.set_ylabel("query position")
    ax.set_title(title or "Attention weights")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax


def plot_next_token_distribution(
    probs: torch.Tensor,
    labels: list[str],
    *,
    top: int = 20,
    ax: plt.Axes | None = None,
    title: str | None = None,
) -> plt.Axes:
    """Bar chart of the ``top`` likeliest next tokens from a (V,) probability vector.

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    if probs.ndim != 1 or probs.shape[0] != len(labels):
        raise ValueError(
            f"probs must be (V,) with V = len(labels) = {len(labels)}, got {tuple(probs.shape)}"
        )
    ax = _axes(ax, (8, 3))
    values, order = torch.topk(probs.detach().float(), min(top, probs.shape[0]))
    ax.bar(range(len(order)), values.numpy(), color="tab:orange")
    ax.set_xticks(range(len(order)), [_char_label(labels[i]) for i in order.tolist()],
                  fontfamily="monospace")
    ax.set_ylabel("probability")
    ax.set_title(title or f"The {len(order)} likeliest next tokens")
    return ax


def plot_loss_curves(
    histories: dict, *, split: str = "val", ax: plt.Axes | None = None
) -> plt.Axes:
    """Evaluated loss against step for several :class:`slmbook.training.History` runs.

    ``histories`` maps a label to a History; ``split`` is ``"val"`` or ``"train"``.

    See chapter 7, "Iterating" (book/07_iterate.ipynb).
    """
    if split not in ("val", "train"):
        raise ValueError(f"split must be 'val' or 'train', got {split!r}")
    ax = _axes(ax, (7, 4))
    for label, h in histories.items():
        losses = h.eval_val_loss if split == "val" else h.eval_train_loss
        ax.plot(h.eval_steps, losses, "o-", ms=3, label=label)
    name = "validation" if split == "val" else "training"
    ax.set(xlabel="step", ylabel=f"{name} loss (nats per token)", title=f"{name.capitalize()} loss")
    ax.legend()
    return ax
