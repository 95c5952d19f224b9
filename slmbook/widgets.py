"""Interactive widgets: thin ipywidgets layers over tested, pure functions.

Each widget function imports ipywidgets lazily (it is an optional extra,
``pip install slmbook[widgets]``) and renders its default state immediately,
so that the static HTML page still shows something meaningful.
"""

from __future__ import annotations

from slmbook._checks import model_device, positive_int


def lr_explorer(
    surface: str = "quadratic",
    optimizer: str = "SGD",
    *,
    lrs: tuple[float, ...] = (1e-3, 3e-3, 0.01, 0.03, 0.05, 0.09, 0.1, 0.11, 0.3, 1.0),
    steps: int = 50,
) -> object:
    """Learning-rate explorer: pick a surface, an optimizer and a learning rate.

    Draws the trajectory of ``slmbook.optim.<optimizer>`` on the 2-D surface
    (``"quadratic"`` or ``"rosenbrock"``) with
    :func:`slmbook.plotting.plot_trajectories`. Needs a live kernel; for the
    static page use :func:`slmbook.plotting.animate_learning_rates`.

    See chapter 6, "Updating the parameters" (book/06_update.ipynb).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from slmbook import optim
    from slmbook.plotting import plot_trajectories
    from slmbook.surfaces import QUADRATIC, ROSENBROCK, run_optimizer

    surfaces = {"quadratic": QUADRATIC, "rosenbrock": ROSENBROCK}
    if surface not in surfaces:
        raise ValueError(f"unknown surface {surface!r}; choose one of {sorted(surfaces)}")
    if optimizer not in optim.__all__:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {optim.__all__}")
    lrs = tuple(lrs)
    default_lr = min(lrs, key=lambda lr: abs(lr - 0.03))

    def show(surface: str, optimizer: str, lr: float) -> None:
        s = surfaces[surface]
        path = run_optimizer(s, getattr(optim, optimizer), steps=steps, lr=lr)
        plot_trajectories(s, {f"{optimizer}, lr={lr:g}": path},
                          title=f"{s.name}: {len(path) - 1} steps")
        plt.show()

    return widgets.interact(
        show,
        surface=widgets.Dropdown(options=sorted(surfaces), value=surface),
        optimizer=widgets.Dropdown(options=list(optim.__all__), value=optimizer),
        lr=widgets.SelectionSlider(options=lrs, value=default_lr, description="lr"),
    )


def temperature_explorer(
    model,
    tokenizer,
    prompt: str,
    *,
    temperatures: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    default: float = 1.0,
    max_new_tokens: int = 80,
    top: int = 20,
    seed: int = 0,
):
    """Sampling-temperature slider: the next-token distribution and a sample at each setting.

    A thin layer over :func:`slmbook.sampling.next_token_probs`,
    :func:`slmbook.sampling.generate` and
    :func:`slmbook.plotting.plot_next_token_distribution`. Every sample uses a
    generator seeded with ``seed``, so a temperature always gives the same text.
    The default temperature is drawn at once, so the static page shows it.

    See chapter 3, "The forward pass" (book/03_forward.ipynb).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import torch

    from slmbook.plotting import plot_next_token_distribution
    from slmbook.sampling import generate, next_token_probs

    temperatures = tuple(temperatures)
    if default not in temperatures:
        raise ValueError(f"default={default!r} is not one of temperatures={temperatures}")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("prompt encodes to no tokens; give at least one character")
    idx = torch.tensor([ids], dtype=torch.long, device=model_device(model))
    labels = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]

    def show(temperature: float) -> None:
        probs = next_token_probs(model, idx, temperature=temperature)[0].cpu()
        plot_next_token_distribution(
            probs, labels, top=top,
            title=f"Next token after {prompt[-20:]!r}, temperature {temperature:g}",
        )
        plt.show()
        g = torch.Generator(device=idx.device).manual_seed(seed)
        print(generate(model, tokenizer, prompt, max_new_tokens, temperature=temperature,
                       generator=g))

    return widgets.interact(
        show,
        temperature=widgets.SelectionSlider(
            options=temperatures, value=default, description="temperature"
        ),
    )


def search_box(retriever, query: str = "how do I handle an error raised inside a with block?",
               *, k: int = 5, max_chars: int = 160):
    """A search box over a fitted retriever: type a question, see the top ``k`` passages.

    A thin layer over :meth:`slmbook.retrieval.TfidfRetriever.search` and
    :func:`slmbook.retrieval.format_hits`. The default ``query`` is searched at
    once, so the static page shows its results; new queries need a live kernel.

    See chapter 9, "Retrieval" (book/09_retrieval.ipynb).
    """
    import ipywidgets as widgets

    from slmbook.retrieval import format_hits

    k = positive_int("k", k)

    def show(query: str) -> None:
        print(format_hits(retriever.search(query, k=k), max_chars=max_chars))

    box = widgets.Text(value=query, description="query", continuous_update=False,
                       layout=widgets.Layout(width="90%"))
    return widgets.interact(show, query=box)
