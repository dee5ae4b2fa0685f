"""Continuous extension of order 7 for Fehlberg's 7(8) pair (include/flowmatch/solver/steppers/rkf78.hpp).

The step propagates the 8th-order solution x1 = x0 + h·Σ b_i k_i over stages 1..13; stage 14 is
k14 = f(t + h, x1) (row a_14 = b), the first stage of the next step. Dense output looks for
weights b_i(θ) = Σ_{m=1..D} β_{m,i} θ^m with
    Σ_i b_i(θ) Φ_i(τ) = θ^|τ| / γ(τ)   for every rooted tree τ with |τ| ≤ q   (order q),
    b(1) = b (continuity), b'(0) = e_1 and b'(1) = e_14 (the derivative is f at both ends: C¹).
Over the 14 stages the highest such q is 5. Extra stages raise it. A stage at t + c·h whose row
a_s satisfies the stage conditions Σ_j a_sj Φ_j(τ) = c^|τ|/γ(τ) for |τ| ≤ r evaluates f on a
state of local error O(h^(r+1)) (Enright, Jackson, Nørsett and Thomsen, "Interpolants for
Runge–Kutta formulas", ACM TOMS 12 (1986)). For which c such a row exists is a linear-algebra
question: the vector (c^|τ|/γ(τ))_τ must lie in the span of the Φ(τ) columns, i.e. be orthogonal
to the left null space, which gives polynomial conditions in c; their common factor is printed.
The search finds, in exact arithmetic (rationals and √7):
  - over stages 1..14, rows of order 6 exist at the roots of 14c² − 14c + 3, c = (7 ∓ √7)/14
    (stages 15 and 16), although order 6 for every θ does not;
  - over stages 1..16, a row of order 7 exists at c = 1/2 (stage 17);
  - over stages 1..17, order 7 holds for every θ: three extra evaluations, as many as the
    order-7 dense output of Hairer's DOP853.
Each extra row is the solution of its stage conditions with the smallest stage errors of the next
order (the residuals of the trees one vertex larger, divided by σ(τ)), then the smallest norm;
the weights b_i(θ) likewise minimise the error coefficients of order 8, then ∫ Σ b_i(θ)² dθ.
Stages 2–5 and 11 get weight 0 in every new row and in b(θ) (they do not change the attainable
orders), which keeps the sums short. The script checks the orders, prints the coefficients for
the header and measures one step on Van der Pol (μ = 1): interpolation error against the step's
error estimate. Run: python3 rkf78_dense_output.py (needs sympy; under a minute).
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
UNUSED = (1, 2, 3, 4, 10)  # stages 2, 3, 4, 5 and 11 (0-based): weight 0 in the new rows and b(θ)


def rational(x):
    return sp.Rational(Fr(x).numerator, Fr(x).denominator)


def base_tableau():
    """Rows of stages 1..14 (k14 = f(t + h, x1): row b), as lists of sympy numbers."""
    rows = [[]] + A_ROWS + [B]
    return [[rational(v) for v in row] + [sp.Integer(0)] * (14 - len(row)) for row in rows]


def with_stage(A, row):
    return [r + [sp.Integer(0)] for r in A] + [list(row) + [sp.Integer(0)]]


def trees(n, memo={1: [()]}):
    """Rooted trees with n vertices; a tree is the sorted tuple of its subtrees (size, tree)."""
    if n not in memo:
        found = set()

        def grow(rest, children, smallest):
            if rest == 0:
                found.add(tuple(sorted(children)))
            for size in range(smallest, rest + 1):
                for child in trees(size):
                    grow(rest - size, children + [(size, child)], size)

        grow(n - 1, [], 1)
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


def phi(t, A, memo={}):
    """Φ_i(τ) = Π over children (Σ_j a_ij Φ_j(child)); Φ_i(•) = 1. The memo keeps A alive, so
    its id is not reused by another tableau."""
    key = (t, id(A))
    if key not in memo:
        S = len(A)
        v = [sp.Integer(1)] * S
        for _, child in t:
            w = phi(child, A)
            v = [sp.expand(v[i] * sum(A[i][j] * w[j] for j in range(S) if A[i][j] != 0))
                 for i in range(S)]
        memo[key] = (A, v)
    return memo[key][1]


def used(A):
    return [i for i in range(len(A)) if i not in UNUSED]


def columns(A, order):
    """The trees up to @p order and the matrix of their Φ over the stages the new rows use."""
    ts = [t for n in range(1, order + 1) for t in trees(n)]
    return ts, sp.Matrix([[phi(t, A)[i] for i in used(A)] for t in ts])


c = sp.Symbol("c")
theta = sp.Symbol("theta")


def row_points(A, order):
    """The common factor of the polynomials in c whose roots are the c at which a row of
    stage order @p order exists."""
    ts, M = columns(A, order)
    target = sp.Matrix([c ** size(t) / gamma(t) for t in ts])
    common = 0
    for y in M.T.nullspace(simplify=True):
        p = sp.expand(sp.radsimp((y.T * target)[0]))
        common = p if common == 0 else sp.gcd(common, p, extension=sp.sqrt(7))
    return sp.factor(common, extension=sp.sqrt(7))


def highest_order(A, limit=8):
    """Largest q for which every power θ^m (m ≤ q) of the conditions is in the span of Φ."""
    for q in range(1, limit + 1):
        ts, M = columns(A, q)
        rank = M.rank(simplify=True)
        for m in range(1, q + 1):
            rhs = sp.Matrix([sp.Rational(1, gamma(t)) if size(t) == m else 0 for t in ts])
            if M.row_join(rhs).rank(simplify=True) != rank:
                return q - 1
    return limit


def least(equations, unknowns, objectives):
    """The solution of the linear @p equations that minimises each quadratic objective in turn
    over the solutions left by the previous ones."""
    (solution,) = sp.linsolve(equations, unknowns)
    values = dict(zip(unknowns, solution))
    for objective in objectives:
        free = sorted(set().union(*[sp.sympify(v).free_symbols for v in values.values()]), key=str)
        if not free:
            break
        value = sp.expand(objective(values))
        (best,) = sp.linsolve([sp.diff(value, p) for p in free], free)
        step = dict(zip(free, best))
        values = {u: sp.radsimp(sp.expand(sp.sympify(v).subs(step))) for u, v in values.items()}
    return values


def stage_row(A, order, point):
    """Row of stage order @p order at c = @p point, smallest stage errors of order + 1."""
    a = {i: sp.Symbol(f"a{i}") for i in used(A)}
    equations = [sum(phi(t, A)[i] * a[i] for i in a) - point ** size(t) / gamma(t)
                 for n in range(1, order + 1) for t in trees(n)]
    errors = lambda v: sum(((sum(phi(t, A)[i] * v[a[i]] for i in a)
                             - point ** size(t) / gamma(t)) / sigma(t)) ** 2
                           for t in trees(order + 1))
    norm = lambda v: sum(v[a[i]] ** 2 for i in a)
    values = least(equations, list(a.values()), (errors, norm))
    return [values[a[i]] if i in a else sp.Integer(0) for i in range(len(A))]


def dense_weights(A, q, degree):
    """b_i(θ) of order q and the given degree, C¹ and ending on b, with the smallest error
    coefficients of order q + 1."""
    S = len(A)
    beta = [[0 if i in UNUSED else sp.Symbol(f"beta{m}_{i}") for i in range(S)]
            for m in range(degree + 1)]
    equations = []
    for i in range(S):
        end = rational(B[i]) if i < 13 else 0
        equations += [beta[0][i], beta[1][i] - (1 if i == 0 else 0),  # b(0) = 0, b'(0) = e_1
                      sum(beta[m][i] for m in range(degree + 1)) - end,  # b(1) = b
                      sum(m * beta[m][i] for m in range(degree + 1)) - (1 if i == 13 else 0)]
    ts = [t for n in range(1, q + 1) for t in trees(n)]
    _, M = columns(A, q)
    independent = [ts[k] for k in M.T.rref(simplify=True)[1]]  # trees with independent rows
    for m in range(2, degree + 1):
        for t in independent:
            equations.append(sum(phi(t, A)[i] * beta[m][i] for i in range(S))
                             - (sp.Rational(1, gamma(t)) if size(t) == m else 0))
    unknowns = [x for row in beta for x in row if isinstance(x, sp.Symbol)]
    polynomial = lambda v: [sum(sp.sympify(beta[m][i]).subs(v) * theta ** m
                                for m in range(degree + 1)) for i in range(S)]
    errors = lambda v: residual_norm2(polynomial(v), A, q + 1)
    norm = lambda v: sum(sp.integrate(sp.expand(w ** 2), (theta, 0, 1)) for w in polynomial(v))
    values = least(equations, unknowns, (errors, norm))
    return [sp.expand(w) for w in polynomial(values)]


def residual_norm2(weights, A, order):
    """∫₀¹ Σ_{|τ|=order} ((Σ_i b_i(θ)Φ_i(τ) − θ^order/γ(τ))/σ(τ))² dθ: the squared size of the
    error coefficients of that order (α(τ)/|τ|! = 1/(σ(τ)γ(τ)))."""
    total = 0
    for t in trees(order):
        r = sum(phi(t, A)[i] * weights[i] for i in range(len(A)) if weights[i] != 0)
        total += sp.expand(((r - theta ** order / gamma(t)) / sigma(t)) ** 2)
    return sp.integrate(total, (theta, 0, 1))


def order_of(weights, A, limit=9):
    """The highest q for which the weights meet every condition up to q for all θ."""
    for q in range(1, limit + 1):
        for t in trees(q):
            r = sum(phi(t, A)[i] * weights[i] for i in range(len(A)) if weights[i] != 0)
            if sp.simplify(sp.expand(r - theta ** q / gamma(t))) != 0:
                return q - 1
    return limit


# --- measurement in double precision: Van der Pol (μ = 1), one step from points on its cycle ---

def vdp(_, x):
    return [x[1], (1 - x[0] ** 2) * x[1] - x[0]]


def stages(A, t, x, h):
    k = []
    for i in range(len(A)):
        xi = [x[d] + h * sum(A[i][j] * k[j][d] for j in range(i)) for d in range(2)]
        k.append(vdp(t + sum(A[i]) * h, xi))
    return k


def measure(A, weights, steps, starts):
    """Per step size: the largest error estimate h·41/840·|k1 + k11 − k12 − k13| and the largest
    interpolation error over θ = 0.1..0.9 against 64 steps of size θh/64."""
    An = [[float(v) for v in row] for row in A]
    f = [sp.lambdify(theta, w, "math") for w in weights]
    b = [float(v) for v in B]
    advance = lambda x, h, k, w: [x[d] + h * sum(wi * k[i][d] for i, wi in enumerate(w))
                                  for d in range(2)]
    rows = []
    for h in steps:
        estimate = interpolation = 0.0
        for x in starts:
            k = stages(An, 0.0, x, h)
            estimate = max(estimate, max(abs(h * 41 / 840 * (k[0][d] + k[10][d] - k[11][d]
                                                             - k[12][d])) for d in range(2)))
            for j in range(1, 10):
                th = j / 10
                y = x
                for _ in range(64):
                    y = advance(y, th * h / 64, stages(An[:13], 0.0, y, th * h / 64), b)
                z = advance(x, h, k, [g(th) for g in f])
                interpolation = max(interpolation, max(abs(z[d] - y[d]) for d in range(2)))
        rows.append((h, estimate, interpolation))
    return rows


if __name__ == "__main__":
    A = base_tableau()
    print(f"stages 1..14: order {highest_order(A)} for every θ; rows of order 6 where "
          f"{row_points(A, 6)} = 0")
    for point in ((7 - sp.sqrt(7)) / 14, (7 + sp.sqrt(7)) / 14):
        A = with_stage(A, stage_row(A[:14], 6, point) + [0] * (len(A) - 14))
    print(f"stages 1..16: order {highest_order(A)} for every θ; rows of order 7 where "
          f"{row_points(A, 7)} = 0")
    A = with_stage(A, stage_row(A, 7, sp.Rational(1, 2)))
    q = highest_order(A)
    print(f"stages 1..17: order {q} for every θ")
    for degree in (q, q + 1):
        try:
            weights = dense_weights(A, q, degree)
            break
        except ValueError:
            print(f"no C¹ extension of order {q} and degree {degree}")
    print(f"degree {degree}: order {order_of(weights, A)}, error coefficients of order {q + 1}: "
          f"{float(sp.sqrt(residual_norm2(weights, A, q + 1))):.3e}")
    for h, estimate, interpolation in measure(A, weights, (0.4, 0.2, 0.1, 0.05),
                                              [[2.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [1.5, -1.5]]):
        print(f"Van der Pol, h = {h}: error estimate {estimate:.2e}, interpolation error "
              f"{interpolation:.2e}")
    exact = lambda v: str(v) if sp.sympify(v).is_Rational else f"{float(v):.17g}"
    print("c and rows of stages 15..17 (stage j = column j; irrational values to 17 digits):")
    for i in (14, 15, 16):
        print(f"c{i + 1} = {exact(sp.radsimp(sum(A[i])))}",
              [f"{j + 1}: {exact(v)}" for j, v in enumerate(A[i]) if v != 0])
    print("b_i(θ) = Σ_m r_im θ^m, rows i = 1..17, columns m = 1..degree:")
    for i, w in enumerate(weights):
        if w != 0:
            print(i + 1, [exact(v) for v in sp.Poly(w, theta).all_coeffs()[::-1][1:]])
