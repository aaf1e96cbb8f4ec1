"""K-means with drizzle_ml: the same fit scheduled one iteration at a time (G=1) and in groups (G="auto").

    python examples/kmeans.py                 # 200,000 x 10, k=8, 2 workers
    python examples/kmeans.py --n 20000 --workers 2 --plot kmeans_loss.png

Prints iterations per second for each group size and the speedup, checks the
two fits agree (they must: group scheduling changes when work is launched,
not what is computed), and saves the loss curve as a PNG when matplotlib is
installed (pip install "drizzle-ml[plot]").
"""

from __future__ import annotations

import numpy as np
from drizzle_ml import KMeans

import drizzle_core as dz
from drizzle_core.cli import ArgumentParser


def make_data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """``n`` points around ``k`` random centers, overlapping enough that Lloyd needs many iterations."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 2.0
    return centers[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))


def save_plot(path: str, curves: dict[str, list[float]]) -> None:
    try:
        import matplotlib
    except ImportError:
        print('matplotlib is not installed: no plot (pip install "drizzle-ml[plot]")')
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, label=label)
    ax.set(xlabel="iteration", ylabel="inertia", title="KMeans (drizzle_ml)", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"loss curve saved to {path}")


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plot", default="kmeans_loss.png", help="where to save the loss curve ('' for none)")
    args = ap.parse_args()

    X = make_data(args.n, args.d, args.k)
    print(f"data: {X.shape[0]:,} x {X.shape[1]}, k={args.k}, {args.workers} workers")
    fits = {}
    with dz.Context(transport="local", workers=args.workers) as ctx:
        KMeans(args.k, random_state=0, max_iter=3, context=ctx).fit(X[:1000])   # warm the workers up
        for g in (1, "auto"):
            km = KMeans(args.k, random_state=0, max_iter=args.max_iter, tol=0.0, context=ctx, group_size=g)
            km.fit(X)
            fits[g] = km
            print(f"  G={g!s:5s} {km.n_iter_:4d} iterations in {km.iterate_seconds_:.3f} s: "
                  f"{km.n_iter_ / km.iterate_seconds_:8.1f} iterations/s   inertia {km.inertia_:.6g}")
    one, auto = fits[1], fits["auto"]
    assert np.array_equal(one.cluster_centers_, auto.cluster_centers_), "group size changed the result"
    speedup = (auto.n_iter_ / auto.iterate_seconds_) / (one.n_iter_ / one.iterate_seconds_)
    print(f"speedup of G=auto over G=1: {speedup:.2f}x (same centers, bit for bit)")
    if args.plot:
        save_plot(args.plot, {"inertia": one.loss_curve_})


if __name__ == "__main__":
    main()
