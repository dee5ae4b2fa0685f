"""Continuous extension of Fehlberg's 7(8) pair (include/flowmatch/solver/steppers/rkf78.hpp).

The step propagates the 8th-order solution x1 = x0 + h·Σ b_i k_i over stages 1..13. Stage 14 is
k14 = f(t + h, x1) (row a_14 = b), the first stage of the next step, so it costs nothing. We look
for weights b_i(θ) = Σ_{m=1..D} β_{m,i} θ^m with
    Σ_i b_i(θ) Φ_i(τ) = θ^|τ| / γ(τ)   for every rooted tree τ with |τ| ≤ q   (order q),
    b(1) = b (continuity), b'(0) = e_1 and b'(1) = e_14 (the derivative is f at both ends: C¹),
in exact rational arithmetic, and print them for the header. The highest such q is found
first (5); degrees 5 and 6 are then compared by their error coefficients and by one step on
Van der Pol, whose interpolation error is set against the step's own error estimate.
Run: python3 rkf78_dense_output.py (needs sympy; a few seconds).
"""
from collections import Counter
from fractions import Fraction as Fr
from math import factorial

import sympy as sp

# Fehlberg (NASA TR R-287, 1968): rows of A (stages 2..13) and the 8th-order weights b.
A_ROWS = [
    [Fr(2, 27)],
    [Fr(1, 36), Fr(1, 12)],
    [Fr(1, 24), 0, Fr(1, 8)],
    [Fr(5, 12), 0, Fr(-25, 16), Fr(25, 16)],
    [Fr(1, 20), 0, 0, Fr(1, 4), Fr(1, 5)],
    [Fr(-25, 108), 0, 0, Fr(125, 108), Fr(-65, 27), Fr(125, 54)],
    [Fr(31, 300), 0, 0, 0, Fr(61, 225), Fr(-2, 9), Fr(13, 900)],
    [2, 0, 0, Fr(-53, 6), Fr(704, 45), Fr(-107, 9), Fr(67, 90), 3],
    [Fr(-91, 108), 0, 0, Fr(23, 108), Fr(-976, 135), Fr(311, 54), Fr(-19, 60), Fr(17, 6), Fr(-1, 12)],
    [Fr(2383, 4100), 0, 0, Fr(-341, 164), Fr(4496, 1025), Fr(-301, 82), Fr(2133, 4100), Fr(45, 82),
     Fr(45, 164), Fr(18, 41)],
    [Fr(3, 205), 0, 0, 0, 0, Fr(-6, 41), Fr(-3, 205), Fr(-3, 41), Fr(3, 41), Fr(6, 41), 0],
    [Fr(-1777, 4100), 0, 0, Fr(-341, 164), Fr(4496, 1025), Fr(-289, 82), Fr(2193, 4100), Fr(51, 82),
     Fr(33, 164), Fr(12, 41), 0, 1],
]
B = [0, 0, 0, 0, 0, Fr(34, 105), Fr(9, 35), Fr(9, 35), Fr(9, 280), Fr(9, 280), 0, Fr(41, 840),
     Fr(41, 840)]
S = 14  # 13 stages and k14
A = [[Fr(0)] * S for _ in range(S)]
for i, row in enumerate(A_ROWS + [B], start=1):
    A[i][: len(row)] = [Fr(v) for v in row]
C = [sum(row) for row in A]
# Stages the interpolant leaves out (weight 0 in b as well): with UNUSED = () the smallest
# error coefficients of order 6 come out the same.
UNUSED = (1, 2, 3, 4, 10)  # stages 2, 3, 4, 5 and 11 (0-based)


def trees(n, memo={1: [()]}):
    """Rooted trees with n vertices; a tree is the sorted tuple of its subtrees (size, tree)."""
    if n not in memo:
        found = set()

        def grow(rest, children):
            if rest == 0:
                found.add(tuple(sorted(children)))
            for size in range(1, rest + 1):
                for child in trees(size):
                    grow(rest - size, children + [(size, child)])

        grow(n - 1, [])
        memo[n] = sorted(found)
    return memo[n]


def size(t):
    return 1 + sum(m for m, _ in t)


def gamma(t):  # density: γ(τ) = |τ|·Π γ(children)
    g = size(t)
    for _, child in t:
        g *= gamma(child)
    return g


def sigma(t):  # symmetry: Π over distinct children (multiplicity)!·σ(child)^multiplicity
    s = 1
    for (_, child), mult in Counter(t).items():
        s *= factorial(mult) * sigma(child) ** mult
    return s


def phi(t):  # Φ_i(τ) = Π over children (Σ_j a_ij Φ_j(child)); Φ_i(•) = 1
    v = [Fr(1)] * S
    for _, child in t:
        w = phi(child)
        v = [v[i] * sum(A[i][j] * w[j] for j in range(S)) for i in range(S)]
    return v


def conditions(q):
    """Rows Φ(τ) and right-hand sides: θ^|τ| has coefficient 1/γ(τ) in condition τ."""
    ts = [t for n in range(1, q + 1) for t in trees(n)]
    return ts, sp.Matrix([[sp.Rational(x.numerator, x.denominator) for x in phi(t)] for t in ts])


def highest_order():
    """Largest q for which every power θ^m (m ≤ q) of the conditions is in the span of Φ."""
    q = 1
    while True:
        ts, M = conditions(q + 1)
        for m in range(1, q + 2):
            rhs = sp.Matrix([sp.Rational(1, gamma(t)) if size(t) == m else 0 for t in ts])
            if M.rank() != M.row_join(rhs).rank():
                return q
        q += 1


theta = sp.Symbol("theta")


def residual_norm2(weights, order):
    """∫₀¹ Σ_{|τ|=order} ((Σ_i b_i(θ)Φ_i(τ) − θ^order/γ(τ))/σ(τ))² dθ: the squared size of the
    error coefficients of that order (α(τ)/|τ|! = 1/(σ(τ)γ(τ)))."""
    total = 0
    for t in trees(order):
        p = phi(t)
        r = sum(sp.Rational(p[i].numerator, p[i].denominator) * weights[i] for i in range(S))
        total += sp.expand(((r - theta**order / gamma(t)) / sigma(t)) ** 2)
    return sp.integrate(total, (theta, 0, 1))


def interpolant(q, degree):
    """The weights of order q and the given degree whose error coefficients of order q + 1 are
    smallest (the freedom left then taken by the smallest ∫ Σ b_i(θ)² dθ), with the free
    parameters rounded to fractions of denominator at most 100 for short exact coefficients."""
    ts, M = conditions(q)
    beta = [[0 if i in UNUSED else sp.Symbol(f"beta{m}_{i}") for i in range(S)]
            for m in range(degree + 1)]
    equations = []
    for i in range(S):
        end = Fr(B[i] if i < 13 else 0)
        equations += [beta[0][i], beta[1][i] - (1 if i == 0 else 0),  # b(0) = 0, b'(0) = e_1
                      sum(beta[m][i] for m in range(degree + 1))  # b(1) = b
                      - sp.Rational(end.numerator, end.denominator),
                      sum(m * beta[m][i] for m in range(degree + 1))  # b'(1) = e_14
                      - (1 if i == S - 1 else 0)]
    for m in range(2, degree + 1):
        for row, t in zip(M.tolist(), ts):
            target = sp.Rational(1, gamma(t)) if size(t) == m else 0
            equations.append(sum(row[i] * beta[m][i] for i in range(S)) - target)
    unknowns = [x for row in beta for x in row if isinstance(x, sp.Symbol)]
    (solution,) = sp.linsolve(equations, unknowns)
    general = [sp.expand(sum((solution[unknowns.index(beta[m][i])] if i not in UNUSED else 0)
                             * theta**m for m in range(degree + 1))) for i in range(S)]
    parameters = sorted(set().union(*[w.free_symbols for w in general]) - {theta}, key=str)
    weights, best = general, {}
    for objective in (lambda w: residual_norm2(w, q + 1),
                      lambda w: sum(sp.integrate(x**2, (theta, 0, 1)) for x in w)):
        free = sorted(set().union(*[w.free_symbols for w in weights]) - {theta}, key=str)
        if not free:
            break
        value = objective(weights)
        (values,) = sp.linsolve([sp.diff(value, p) for p in free], free)
        step = dict(zip(free, values))
        best = {p: sp.sympify(v).subs(step) for p, v in best.items()} | step
        weights = [sp.expand(w.subs(step)) for w in weights]
    rounded = {p: sp.Rational(str(Fr(str(best[p])).limit_denominator(100))) for p in parameters}
    return [sp.expand(w.subs(rounded)) for w in general]


# --- measurement in double precision: Van der Pol (μ = 1), one step from points on its cycle ---

def vdp(_, x):
    return [x[1], (1 - x[0] ** 2) * x[1] - x[0]]


def step(t, x, h):
    """The stages of one step; k[13] = f(t + h, x1)."""
    k = []
    for i in range(S):
        xi = [x[d] + h * sum(float(A[i][j]) * k[j][d] for j in range(i)) for d in range(2)]
        k.append(vdp(t + float(C[i]) * h, xi))
    return k


def state(x, h, k, weights_at):
    return [x[d] + h * sum(w * k[i][d] for i, w in enumerate(weights_at)) for d in range(2)]


def step_error_estimate(h, starts):
    """Largest error estimate h·41/840·|k1 + k11 − k12 − k13| of one step of size h."""
    worst = 0.0
    for x in starts:
        k = step(0.0, x, h)
        worst = max(worst, max(abs(h * 41 / 840 * (k[0][d] + k[10][d] - k[11][d] - k[12][d]))
                               for d in range(2)))
    return worst


def interpolation_error(weights, h, starts):
    """Largest error over θ = 0.1..0.9 of one step of size h, against 64 steps of size θh/64."""
    f = [sp.lambdify(theta, w, "math") for w in weights]
    worst = 0.0
    for x in starts:
        k = step(0.0, x, h)
        for j in range(1, 10):
            th = j / 10
            y = x
            for _ in range(64):
                y = state(y, th * h / 64, step(0.0, y, th * h / 64), [float(b) for b in B] + [0])
            z = state(x, h, k, [g(th) for g in f])
            worst = max(worst, max(abs(z[d] - y[d]) for d in range(2)))
    return worst


if __name__ == "__main__":
    q = highest_order()
    print(f"highest order of a continuous extension over the 14 stages: q = {q}")
    starts = [[2.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [1.5, -1.5]]
    steps = (0.4, 0.2, 0.1, 0.05)
    print("Van der Pol, h = " + ", ".join(map(str, steps)) + ": the step's error estimate "
          + ", ".join(f"{step_error_estimate(h, starts):.2e}" for h in steps))
    chosen = None
    for degree in (q, q + 1):
        weights = interpolant(q, degree)
        sizes = [float(sp.sqrt(residual_norm2(weights, n))) for n in (q + 1, q + 2)]
        errors = [interpolation_error(weights, h, starts) for h in steps]
        print(f"degree {degree}: error coefficients of order {q + 1}: {sizes[0]:.3e}, "
              f"{q + 2}: {sizes[1]:.3e}; interpolation errors " + ", ".join(f"{e:.2e}" for e in errors))
        if chosen is None or errors[0] < chosen[1][0]:
            chosen = (weights, errors)
    weights = chosen[0]
    print("b_i(θ) = Σ_m r_im θ^m, rows i = 1..14, columns m = 1..degree:")
    for i, w in enumerate(weights):
        coefficients = sp.Poly(w, theta).all_coeffs()[::-1][1:] if w != 0 else []
        print(i + 1, coefficients)
