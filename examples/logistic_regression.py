"""Logistic regression with drizzle_ml: full-batch gradient descent scheduled per iteration (G=1) and in groups.

``solver="gd"``: the default solver, Newton, needs only a handful of iterations; gradient descent shows
what grouping does to hundreds of them.

    python examples/logistic_regression.py            # 200,000 x 20, 2 workers
    python examples/logistic_regression.py --n 20000 --plot ''

Prints iterations per second for G=1 and G="auto" and the speedup, checks the
two fits agree, reports training accuracy, and saves the loss curve as a PNG
when matplotlib is installed (pip install "drizzle-ml[plot]").
"""

from __future__ import annotations

import warnings

import numpy as np
from drizzle_ml import ConvergenceWarning, LogisticRegression

import drizzle_core as dz
from drizzle_core.cli import ArgumentParser


def make_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with different scales and offsets; labels from a noisy linear rule."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d)
    y = (X @ rng.normal(size=d) + rng.logistic(size=n) > 0).astype(int)
    return X, y


def save_plot(path: str, curve: list[float]) -> None:
    try:
        import matplotlib
    except ImportError:
        print('matplotlib is not installed: no plot (pip install "drizzle-ml[plot]")')
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = min(curve)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(curve) + 1), np.array(curve) - best + 1e-16)
    ax.set(xlabel="iteration", ylabel="loss - final loss", title="LogisticRegression (drizzle_ml)", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"loss curve saved to {path}")


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=20)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plot", default="logistic_loss.png", help="where to save the loss curve ('' for none)")
    args = ap.parse_args()

    X, y = make_data(args.n, args.d)
    print(f"data: {X.shape[0]:,} x {X.shape[1]}, {args.workers} workers")
    fits = {}
    with dz.Context(transport="local", workers=args.workers) as ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)      # a fixed number of iterations, on purpose
        LogisticRegression(solver="gd", max_iter=3, context=ctx).fit(X[:1000], y[:1000])   # warm the workers up
        for g in (1, "auto"):
            lr = LogisticRegression(C=1.0, solver="gd", max_iter=args.max_iter, tol=0.0, context=ctx, group_size=g)
            lr.fit(X, y)
            fits[g] = lr
            print(f"  G={g!s:5s} {lr.n_iter_:4d} iterations in {lr.iterate_seconds_:.3f} s: "
                  f"{lr.n_iter_ / lr.iterate_seconds_:8.1f} iterations/s   loss {lr.loss_curve_[-1]:.6f}")
    one, auto = fits[1], fits["auto"]
    assert np.array_equal(one.coef_, auto.coef_), "group size changed the result"
    speedup = (auto.n_iter_ / auto.iterate_seconds_) / (one.n_iter_ / one.iterate_seconds_)
    print(f"speedup of G=auto over G=1: {speedup:.2f}x (same coefficients, bit for bit)")
    print(f"training accuracy {one.score(X, y):.4f}")
    if args.plot:
        save_plot(args.plot, one.loss_curve_)


if __name__ == "__main__":
    main()
