"""L-BFGS as ``iterate``'s ``update``: the whole optimizer is the state, and one iteration is one data pass.

Same objective and parameter layout as :mod:`._gd` and :mod:`._newton` (a
weighted mean loss plus ``l2/2 ||coef||^2``, ``theta = [coef.ravel(),
intercepts]``). The state (:class:`LBFGSState`) is everything the optimizer
knows: the accepted point ``best`` with its loss and gradient, the search
direction, the last ``MEMORY`` (s, y) pairs, and the line search in progress.
``update`` runs on every worker (``iterate`` all-reduces), so it is a pure
function of (state, combined partial): numpy on the same inputs, no
randomness, no clock.

One pass, several trial steps
-----------------------------
A line search usually needs the loss at one or two steps along the
direction ``d``, and each would be a pass (and a hop between workers). So
every iteration evaluates T steps at once: the kernels
(:mod:`._trial_losses`) return the loss and the full gradient at
``best + a_k d`` for every ``a_k`` in ``state.steps``, for about the price of
one gradient (the margins are linear in ``a``). Pass 1 evaluates the start
point alone (one trial, step 0): the first direction needs its gradient.
After that ``update`` decides:

1. If some trials satisfy the strong Wolfe conditions (scipy's L-BFGS-B
   constants, which scikit-learn's lbfgs uses: ``C1 = 1e-3``, ``C2 = 0.9``)::

       f(a) <= f(0) + C1 a f'(0) + ARMIJO_SLACK |f(0)|      (sufficient decrease)
       |f'(a)| <= C2 |f'(0)|                                 (curvature)

   with ``f(a) = loss(best + a d)`` and ``f'(a) = grad(best + a d) . d``
   (the slack, ``1e-12`` relative as in :mod:`._gd`: ``f`` is a sum over n
   rows, and near the optimum its rounding noise exceeds the true decrease,
   while the gradients, exact to many more digits, still decide), the
   one with the lowest loss is accepted (ties: the longer step), the (s, y)
   pair is stored and the next direction comes from the two-loop recursion.
   Why this is L-BFGS: the method asks its line search for *a* step
   satisfying the two conditions, not for a particular one, and every
   accepted trial is such a step. Sufficient decrease makes the losses
   decrease; curvature gives ``s'y = a (f'(a) - f'(0)) >= a (1 - C2)
   |f'(0)| > 0``, so the inverse-Hessian approximation stays positive
   definite and the next direction descends; with both, L-BFGS converges on
   a uniformly convex function (the l2-penalised loss; Liu & Nocedal 1989,
   Theorem 7.1). Which of several Wolfe steps is taken does not enter that
   argument; the lowest loss is the best candidate the pass has already paid
   for. The choice is a deterministic function of the combined partial (the
   same on every worker, ties broken by the step).

2. If none does, the trials still bound where a Wolfe step lies, and the
   next pass evaluates T new steps from the same point along the same
   direction. The state keeps a bracket ``(lo, hi)`` (Nocedal & Wright,
   Algorithms 3.5 and 3.6): ``lo`` is the step with the lowest loss among
   those that satisfy sufficient decrease (0, the start, at first) and
   ``f'(lo) (hi - lo) < 0``; ``hi`` is a step past which the loss rose
   (sufficient decrease failed, or ``f(hi) >= f(lo)``), or an earlier ``lo``,
   or ``inf`` while no such step is known. Under those invariants the open
   interval between them holds a step satisfying both conditions (N&W,
   Lemma 3.1 and the zoom argument), since ``C1 < C2``. The trials are folded
   into the bracket one at a time, nearest to ``lo`` first, by the zoom rule:
   a trial inside the bracket that fails sufficient decrease or does not
   lower the loss becomes ``hi``; otherwise it becomes ``lo`` (and, if the
   loss turned upward there, ``f'(q) (hi - lo) >= 0``, the old ``lo`` becomes
   ``hi``). Each rule keeps the invariants, so the order only changes how
   fast the bracket shrinks, never whether it is valid. Then:

   * ``hi`` is ``inf`` (every trial still descends steeply: steps too short):
     the next trials extrapolate, ``lo * EXTRAPOLATE ** (1..T)``;
   * otherwise the next trials lie inside the bracket: the minimiser of the
     cubic through both ends' losses and slopes (kept within 10-90 % of the
     bracket) and steps halving from ``hi`` toward ``lo``
     (``lo + (hi - lo) / 2**j``): the trial set shrinks toward the last good
     step, as a backtracking search would, T steps per pass.

   The loss curve shows the accepted loss again for such a pass (the point
   did not move); ``n_iter_`` counts it, as it cost a pass.

3. After ``MAX_SEARCH_PASSES`` passes on one direction, or once the bracket
   is narrower than ``XTOL`` relative to its ends (rounding noise, not the
   function, is then deciding), the search settles: if ``lo > 0`` (a step
   that decreased the loss sufficiently) it is accepted, and its pair kept
   only if ``s'y > 0``. If no step decreased the loss (``lo = 0``) the
   direction is dropped with the whole history and the search restarts along
   the (scaled) gradient; if even the gradient direction yields no decrease,
   the fit has reached the floating-point floor of the loss: ``status`` becomes
   ``"stalled"``, iterations stop, and the estimator warns (scikit-learn warns
   for scipy's ``ABNORMAL_TERMINATION_IN_LNSRCH`` alike).

Scale. L-BFGS directions use ``H0 = (s'y / y'y) I`` from the newest pair, so
the natural step is 1 and ``DIRECTION_STEPS`` start there. With no pairs yet
(the first direction, or after a reset) the direction is the gradient scaled
to unit length, as scipy's first step, and ``GRADIENT_STEPS`` span two
decades around it. The scale depends on the objective alone, not on how it
is stored: a fit with integer sample weights follows the same path as one on
repeated rows (scikit-learn's sample-weight equivalence check asks for that
to 1e-7), which a scale estimated from a sample of rows would not give.

Stopping, as scikit-learn's lbfgs: ``max |grad f(best)| <= tol`` (the
``gtol`` it passes to scipy), or an accepted step that lowered the loss by
at most ``FTOL`` relative (scipy's ``ftol``, which scikit-learn sets to
``64 eps``: the loss stopped moving at machine precision); ``status`` says
which, and ``until`` (:class:`LBFGSUntil`) stops on either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ._gd import ARMIJO_SLACK  # relative rounding noise in f, as in _gd and _newton

C1 = 1e-3                       # sufficient decrease (scipy L-BFGS-B's line search ftol)
C2 = 0.9                        # strong Wolfe curvature (scipy L-BFGS-B's line search gtol)
MEMORY = 10                     # (s, y) pairs kept: scipy's maxcor default, which scikit-learn uses
FTOL = 64 * np.finfo(np.float64).eps   # scikit-learn's ftol: relative decrease at which the loss stopped moving
DIRECTION_STEPS = (1.0, 0.5, 2.0)        # trial steps along an L-BFGS direction (1: the quasi-Newton step)
GRADIENT_STEPS = (1.0, 0.1, 10.0)        # trial steps along the unit-length gradient (no pairs yet)
EXTRAPOLATE = 4.0               # next trials lo * 4, 16, ... when every trial was too short
MAX_SEARCH_PASSES = 10          # passes one direction may take before the search settles
XTOL = 1e-10                    # bracket width, relative to its ends, below which the search settles
CUBIC_GUARD = 0.1               # the cubic's step stays within [10 %, 90 %] of the bracket


@dataclass(frozen=True, slots=True)
class LineSearch:
    """The line search along ``state.direction``: the bracket of N&W's zoom (see the module docstring)."""

    lo: float                   # the best step so far: sufficient decrease, lowest loss (0: the start point)
    lo_loss: float              # f(lo)
    lo_slope: float             # f'(lo) = grad(best + lo d) . d
    lo_grad: np.ndarray | None  # grad f(best + lo d); None while lo == 0 (it is state.grad)
    hi: float                   # the bracket's other end; inf while no trial has overshot
    hi_loss: float              # f(hi) (inf when hi is)
    hi_slope: float             # f'(hi) (nan when hi is inf)
    passes: int                 # passes spent on this direction so far


def _start(loss: float, slope: float) -> LineSearch:
    return LineSearch(0.0, loss, slope, None, np.inf, np.inf, np.nan, 0)


@dataclass(frozen=True, slots=True)
class LBFGSState:
    """What ``iterate`` carries between iterations: the whole optimizer (every worker holds a copy)."""

    best: np.ndarray            # (p,) the accepted point: the fitted parameters
    loss: float                 # f(best); inf before the first evaluation
    grad: np.ndarray            # (p,) grad f(best)
    grad_max: float             # max |grad f(best)|: the stopping measure
    direction: np.ndarray       # (p,) the search direction at best (zeros before the first evaluation)
    steps: np.ndarray           # (T,) the steps the next pass evaluates: best + steps[k] * direction
    S: np.ndarray               # (k, p) the last k <= MEMORY steps s = x_new - x, oldest first
    Y: np.ndarray               # (k, p) their gradient changes y = g_new - g
    rho: np.ndarray             # (k,) 1 / (s'y) of each pair
    search: LineSearch          # the line search in progress along direction
    status: str                 # "running", "converged" (loss stopped moving, FTOL), "stalled" (no decrease)


def initial_state(theta0: np.ndarray) -> LBFGSState:
    """Before iteration 1: the first pass evaluates theta0 itself (one trial, step 0, zero direction)."""
    p = theta0.shape[0]
    zeros = np.zeros(p)
    none = np.empty((0, p))
    return LBFGSState(theta0, np.inf, zeros, np.inf, zeros, np.zeros(1), none, none, np.empty(0),
                      _start(np.inf, 0.0), "running")


def two_loop(g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """``-H g`` for the L-BFGS inverse Hessian of the pairs ``(S, Y)`` (N&W Algorithm 7.4), ``H0 = s'y/y'y I``."""
    k = S.shape[0]
    q = g.copy()
    alpha = np.empty(k)
    for i in range(k - 1, -1, -1):
        alpha[i] = rho[i] * float(S[i] @ q)
        q -= alpha[i] * Y[i]
    q *= 1.0 / (rho[-1] * float(Y[-1] @ Y[-1]))         # gamma = s'y / y'y of the newest pair
    for i in range(k):
        beta = rho[i] * float(Y[i] @ q)
        q += (alpha[i] - beta) * S[i]
    return -q


class LBFGSUpdate:
    """``update``: the trials' losses and gradients from the combined partial, then accept, bracket or settle."""

    __slots__ = ("l2", "n", "n_coef")

    def __init__(self, n: float, n_coef: int, l2: float) -> None:
        self.n = n                          # the total sample weight: partials are (weighted) sums
        self.n_coef = n_coef                # theta[:n_coef] is penalised; the rest are intercepts
        self.l2 = l2

    def __reduce__(self):
        return (LBFGSUpdate, (self.n, self.n_coef, self.l2))

    # ------------------------------------------------------------ one pass
    def __call__(self, state: LBFGSState, total: np.ndarray) -> LBFGSState:
        x, d, steps = state.best, state.direction, state.steps
        p, T = x.shape[0], steps.shape[0]
        parts = total.reshape(T, p + 1)
        losses = parts[:, p] / self.n
        grads = parts[:, :p] / self.n
        if self.l2:
            coef = x[:self.n_coef] + steps[:, None] * d[:self.n_coef]     # (T, n_coef): every trial's coefficients
            grads[:, :self.n_coef] += self.l2 * coef
            losses += 0.5 * self.l2 * np.einsum("ij,ij->i", coef, coef)
        if T == 1 and steps[0] == 0.0:             # pass 1 evaluated the start point (no later step is 0)
            return self._from(state, x, float(losses[0]), grads[0], state.S, state.Y, state.rho)
        f0, slope0 = state.loss, float(state.grad @ d)                   # f(0) and f'(0) < 0
        slopes = grads @ d
        decrease = losses <= f0 + C1 * steps * slope0 + ARMIJO_SLACK * abs(f0)      # NaN compares False
        wolfe = decrease & (np.abs(slopes) <= C2 * abs(slope0))
        if wolfe.any():
            k = min(np.flatnonzero(wolfe), key=lambda i: (losses[i], -steps[i]))
            return self._accept(state, float(steps[k]), float(losses[k]), grads[k])
        search = self._bracket(state.search, steps, losses, slopes, grads, decrease)
        collapsed = np.isfinite(search.hi) and abs(search.hi - search.lo) <= XTOL * max(abs(search.lo),
                                                                                          abs(search.hi))
        if search.passes >= MAX_SEARCH_PASSES or collapsed:
            return self._settle(state, search)
        return replace(state, steps=next_steps(search, T), search=search)

    def _bracket(self, search: LineSearch, steps: np.ndarray, losses: np.ndarray, slopes: np.ndarray,
                 grads: np.ndarray, decrease: np.ndarray) -> LineSearch:
        """Fold the trials into the bracket by the zoom rule, nearest to ``lo`` first (module docstring, 2)."""
        lo, lo_loss, lo_slope, lo_grad = search.lo, search.lo_loss, search.lo_slope, search.lo_grad
        hi, hi_loss, hi_slope = search.hi, search.hi_loss, search.hi_slope
        for k in sorted(range(steps.shape[0]), key=lambda i: (abs(steps[i] - lo), steps[i])):
            a = float(steps[k])
            if not (min(lo, hi) < a < max(lo, hi)):
                continue                                                # outside the bracket: no news
            if not decrease[k] or not losses[k] < lo_loss:              # overshot (NaN lands here too)
                hi, hi_loss, hi_slope = a, float(losses[k]), float(slopes[k])
                continue
            if slopes[k] * (hi - lo) >= 0:                              # the loss turns upward before hi
                hi, hi_loss, hi_slope = lo, lo_loss, lo_slope
            lo, lo_loss, lo_slope, lo_grad = a, float(losses[k]), float(slopes[k]), grads[k]
        return LineSearch(lo, lo_loss, lo_slope, lo_grad, hi, hi_loss, hi_slope, search.passes + 1)

    def _settle(self, state: LBFGSState, search: LineSearch) -> LBFGSState:
        """No Wolfe step found in time: take the best decreasing step, or restart, or stop (module docstring, 3)."""
        if search.lo > 0.0 and search.lo_grad is not None:
            return self._accept(state, search.lo, search.lo_loss, search.lo_grad)
        if state.S.shape[0]:                                            # drop the history: the gradient direction
            none = np.empty((0, state.best.shape[0]))
            return self._from(state, state.best, state.loss, state.grad, none, none, np.empty(0))
        return replace(state, status="stalled")

    def _accept(self, state: LBFGSState, step: float, loss: float, grad: np.ndarray) -> LBFGSState:
        """Move to ``best + step d``; keep the pair when its curvature is positive; the next direction."""
        x = state.best + step * state.direction
        s, y = x - state.best, grad - state.grad
        sy = float(s @ y)
        S, Y, rho = state.S, state.Y, state.rho
        if sy > np.finfo(np.float64).eps * float(y @ y) and np.isfinite(sy):
            keep = max(0, S.shape[0] - MEMORY + 1)
            S, Y = np.vstack((S[keep:], s)), np.vstack((Y[keep:], y))
            rho = np.append(rho[keep:], 1.0 / sy)
        new = self._from(state, x, loss, grad, S, Y, rho)
        if new.status == "running" and state.loss - loss <= FTOL * max(abs(state.loss), abs(loss), 1.0):
            new = replace(new, status="converged")                      # scipy's REL_REDUCTION_OF_F
        return new

    def _from(self, state: LBFGSState, x: np.ndarray, loss: float, grad: np.ndarray, S: np.ndarray,
              Y: np.ndarray, rho: np.ndarray) -> LBFGSState:
        """The state at an accepted point: the L-BFGS direction (or the scaled gradient) and its first trials."""
        grad_max = float(np.abs(grad).max(initial=0.0))
        d = two_loop(grad, S, Y, rho) if S.shape[0] else None
        if d is not None and not float(grad @ d) < 0.0:                # rounding broke the descent: start over
            S, Y, rho, d = S[:0], Y[:0], rho[:0], None
        if d is None:
            norm = float(np.linalg.norm(grad))
            d, steps = -grad / norm if norm > 0.0 else -grad, GRADIENT_STEPS
        else:
            steps = DIRECTION_STEPS
        status = "converged" if grad_max == 0.0 else "running"          # a zero gradient: nothing left to do
        slope = float(grad @ d)
        return LBFGSState(x, loss, grad, grad_max, d, np.array(steps), S, Y, rho, _start(loss, slope), status)


def next_steps(search: LineSearch, T: int) -> np.ndarray:
    """The next pass's T trials, from the bracket (module docstring, 2)."""
    lo, hi = search.lo, search.hi
    if not np.isfinite(hi):
        return lo * EXTRAPOLATE ** np.arange(1, T + 1)
    width = hi - lo
    inside = [lo + width / 2.0 ** j for j in range(1, T)]
    cubic = cubic_minimizer(lo, search.lo_loss, search.lo_slope, hi, search.hi_loss, search.hi_slope)
    t = 2.0 ** -T if cubic is None else min(max((cubic - lo) / width, CUBIC_GUARD), 1.0 - CUBIC_GUARD)
    inside.append(lo + t * width)
    return np.array(inside)


def cubic_minimizer(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float | None:
    """The minimiser of the cubic with values ``fa, fb`` and slopes ``da, db`` at ``a, b`` (N&W (3.59)), or None."""
    with np.errstate(all="ignore"):
        d1 = da + db - 3.0 * (fa - fb) / (a - b)
        disc = d1 * d1 - da * db
        if not (np.isfinite(disc) and disc >= 0.0):
            return None
        d2 = np.copysign(np.sqrt(disc), b - a)
        denom = db - da + 2.0 * d2
        if denom == 0.0 or not np.isfinite(denom):
            return None
        t = b - (b - a) * (db + d2 - d1) / denom
    return float(t) if np.isfinite(t) else None


class LBFGSUntil:
    """``until``: the gradient is at most ``tol`` in every coordinate, or the loss stopped moving, or stalled."""

    __slots__ = ("tol",)

    def __init__(self, tol: float) -> None:
        self.tol = tol

    def __call__(self, state: LBFGSState) -> bool:
        return state.grad_max <= self.tol or state.status != "running"

    def __reduce__(self):
        return (LBFGSUntil, (self.tol,))
