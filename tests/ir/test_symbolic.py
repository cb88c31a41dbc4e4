"""Symbolic sizes (Mono), constraints and map algebra."""

from fractions import Fraction

import pytest
import sympy

from prism_jax.ir import (ConstraintSet, Divisible, InRange, IRError, MapVar, MemoryBudget, Mono,
                          UnsatisfiableError, enumerate_assignments, evaluate_size, map_from_dims, map_variables,
                          substitute, sym, tile_dim, tile_dim_expr)
from prism_jax.ir.maps import block_offsets, loop_map, split_factor, substitute_map
from prism_jax.ir.symbolic import div, free_symbols, from_sympy, mul, normalize, to_sympy

n, g, F = sym("n"), sym("g"), sym("F")


# -- Mono arithmetic ------------------------------------------------------------------------------


def test_mono_products_cancel_to_int():
    assert n * g / n == g
    assert n / n == 1 and isinstance(n / n, int)
    assert (n * 4) / 2 == 2 * n
    assert (2 * n) / (2 * n) == 1
    assert n * g == g * n  # factors are sorted, so products are canonical
    assert hash(n * g) == hash(g * n)


def test_mono_division_keeps_negative_exponents_and_fractions():
    q = n / (g * F)
    assert q.factors == (("F", -1), ("g", -1), ("n", 1))
    assert not q.is_integral_polynomial()
    assert (n * n).is_integral_polynomial()
    assert (n / 2).coeff == Fraction(1, 2) and not (n / 2).is_integral_polynomial()
    assert q * g * F == n


def test_mono_str():
    assert str(n / (g * F)) == "n/(F*g)"
    assert str(3 * n * n / 2) == "3*n^2/2"
    assert str(1 / g) == "1/g"


def test_mono_rejects_bad_input():
    with pytest.raises(IRError, match="not an identifier"):
        sym("2x")
    with pytest.raises(IRError, match="by zero"):
        n / 0
    with pytest.raises(IRError, match="not a size"):
        Mono.of(True)
    with pytest.raises(IRError, match="not a size"):
        Mono.of(1.5)


def test_normalize_mul_div():
    assert normalize(Fraction(6, 3)) == 2 and isinstance(normalize(Fraction(6, 3)), int)
    assert isinstance(normalize(Fraction(1, 3)), Mono)
    assert mul(2, 3, 4) == 24
    assert mul(2, n, g) == 2 * n * g
    assert div(12, 4) == 3
    with pytest.raises(IRError, match="not divisible"):
        div(12, 5)
    assert div(n, g) == n / g


def test_substitute_and_evaluate():
    expr = n / g
    assert substitute(expr, {"n": 8}) == 8 / g
    assert substitute(expr, {"n": 8, "g": 2}) == 4
    assert evaluate_size(n * g, {"n": 3, "g": 5}) == 15
    assert evaluate_size(7, {}) == 7
    with pytest.raises(IRError, match=r"unbound symbols \['g'\]"):
        evaluate_size(expr, {"n": 8})
    with pytest.raises(IRError, match="not an integer"):
        substitute(expr, {"n": 8, "g": 3})
    third = substitute(expr, {"n": 8, "g": 3}, integral=False)
    assert isinstance(third, Mono) and third.coeff == Fraction(8, 3) and not third.factors
    assert free_symbols(n / (g * F)) == {"n", "g", "F"}


def test_sympy_round_trip():
    expr = 3 * n / (g * F)
    assert from_sympy(to_sympy(expr)) == expr
    assert from_sympy(to_sympy(12)) == 12
    with pytest.raises(IRError, match="not a monomial"):
        from_sympy(to_sympy(n) + 1)


# -- constraints ----------------------------------------------------------------------------------


def test_divisible():
    assert Divisible(n * g, g).trivially() is True
    assert Divisible(8 * n, 4).trivially() is True
    assert Divisible(n, g).trivially() is None
    assert Divisible(n, 2).trivially() is None
    assert Divisible(12, 4).trivially() is True
    assert Divisible(6, 4).trivially() is False
    assert Divisible(n, g).holds({"n": 12, "g": 4})
    assert not Divisible(n, g).holds({"n": 12, "g": 5})
    assert Divisible(n, g).substitute({"g": 1}).trivially() is True
    assert str(Divisible(n, g)) == "g | n"


def test_in_range():
    assert InRange(n, 1).trivially() is None
    assert InRange(4, 1, 8).trivially() is True
    assert InRange(0, 1).trivially() is False
    assert InRange(9, 1, 8).trivially() is False
    assert InRange(n * g, 1, 64).holds({"n": 8, "g": 8})
    assert not InRange(n * g, 1, 64).holds({"n": 8, "g": 9})
    assert InRange(n, 2, 4).substitute({"n": 3}).trivially() is True


def test_memory_budget():
    budget = MemoryBudget(((n * 16, 4), (g, 2)), 1024)
    assert budget.trivially() is None
    assert budget.usage({"n": 8, "g": 64}) == 8 * 16 * 4 + 64 * 2
    assert budget.holds({"n": 8, "g": 64})  # 512 + 128 <= 1024
    assert not budget.holds({"n": 16, "g": 64})  # 1024 + 128 > 1024
    assert MemoryBudget(((128, 4),), 512).trivially() is True
    assert MemoryBudget(((129, 4),), 512).trivially() is False
    assert budget.substitute({"n": 2, "g": 4}).trivially() is True
    assert isinstance(budget.as_sympy(), sympy.core.relational.Relational)
    assert budget.as_sympy().subs({sympy.Symbol("n", positive=True, integer=True): 8,
                                   sympy.Symbol("g", positive=True, integer=True): 64}) == sympy.true


def test_constraint_set_simplify_drops_trivial_ones():
    cs = ConstraintSet.of([Divisible(n * g, g), InRange(4, 1), Divisible(n, g, reason="tile"),
                           InRange(F, 1, 16)])
    simple = cs.simplify()
    assert list(simple) == [Divisible(n, g), InRange(F, 1, 16)]
    assert simple.free_symbols == {"n", "g", "F"}
    assert simple.is_satisfied({"n": 8, "g": 4, "F": 2})
    violations = simple.violations({"n": 8, "g": 3, "F": 32})
    assert len(violations) == 2 and "(tile)" in violations[0]


def test_constraint_set_simplify_raises_on_impossible():
    with pytest.raises(UnsatisfiableError, match=r"never hold: 4 \| 6"):
        ConstraintSet.of([Divisible(n, g), Divisible(6, 4)]).simplify()
    cs = ConstraintSet.of([Divisible(n, g), InRange(g, 1, 4)])
    with pytest.raises(UnsatisfiableError):
        cs.substitute({"g": 8}).simplify()
    assert len(cs.substitute({"g": 2, "n": 6}).simplify()) == 0


def test_constraint_set_dedupes_and_combines():
    a = ConstraintSet.of([Divisible(n, g), Divisible(n, g, reason="again")])
    assert len(a) == 1  # reasons do not enter equality
    b = a & ConstraintSet.of([InRange(g, 1)])
    assert len(b) == 2 and str(b) == "g | n and 1 <= g"
    assert str(ConstraintSet()) == "true"


# -- maps -----------------------------------------------------------------------------------------


def test_tile_dim_expr_with_map_variables():
    D, gx, gy = sym("D"), sym("gx"), sym("gy")
    m, k = MapVar("m"), MapVar("k")
    expr = tile_dim_expr(D, (m, False), (gx, gy))
    msym = sympy.Symbol("m")
    assert sympy.simplify(expr.subs(msym, 1) - to_sympy(D / gx)) == 0
    assert sympy.simplify(expr.subs(msym, 0) - to_sympy(D)) == 0
    # grid and loop split together: D / (gx * F)
    both = tile_dim_expr(D, (m, False), (gx, gy), k, F)
    ksym = sympy.Symbol("k")
    assert sympy.simplify(both.subs({msym: 1, ksym: 1}) - to_sympy(D / (gx * F))) == 0
    assert sympy.simplify(both.subs({msym: 0, ksym: 1}) - to_sympy(D / F)) == 0
    # the concrete form agrees with the symbolic one
    assert tile_dim(D, (True, False), (gx, gy), True, F) == D / (gx * F)
    assert tile_dim(12, (True, True), (2, 3), True, 2) == 1


def test_map_helpers():
    assert map_from_dims(3, 2, [2, None]) == ((False, False), (False, False), (True, False))
    with pytest.raises(IRError, match="outside rank"):
        map_from_dims(2, 1, [2])
    with pytest.raises(IRError, match="names 1 grid dims"):
        map_from_dims(2, 2, [0])
    assert loop_map(3, 1) == (False, True, False)
    assert split_factor((True, False, True), (2, 3, 4), True, 5) == 40
    with pytest.raises(IRError, match="concrete map"):
        split_factor((MapVar("a"),), (2,), False, 1)
    m = ((MapVar("b"), False), (True, MapVar("a")))
    assert map_variables(m) == (MapVar("a"), MapVar("b"))
    assert substitute_map(m, {"a": True}) == ((MapVar("b"), False), (True, True))
    assignments = list(enumerate_assignments(map_variables(m)))
    assert len(assignments) == 4 and {"a": True, "b": False} in assignments


def test_block_offsets_grid_major_loop_minor():
    # dim split over grid dims 0 and 2 (extents 2 and 4) then the loop (3): block (1, *, 2), iteration 1
    assert block_offsets((True, False, True), (2, 5, 4), (1, 3, 2), True, 3, 1) == ((1 * 4 + 2) * 3 + 1, 24)
    assert block_offsets((False,), (4,), (3,)) == (0, 1)


def test_cached_hashes_stay_in_their_process():
    """Monos and tensor types cache their hash; a pickled copy (sent to a search worker, whose string
    hashes differ) must hash afresh, equal to the original."""
    import pickle
    import subprocess
    import sys

    from prism_jax.ir import DType, TensorType

    size = sym("D") / (sym("gx") * 4)
    tile = TensorType((size, 8), DType.FLOAT32)
    table = {tile: "tile", size: "size"}
    data = pickle.dumps((tile, size))
    code = ("import pickle, sys; tile, size = pickle.loads(sys.stdin.buffer.read()); "
            "print({tile: 1}[pickle.loads(pickle.dumps(tile))], hash(size) == hash(size * 1))")
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, check=True).stdout
    assert out.split() == [b"1", b"True"]
    assert table[pickle.loads(data)[0]] == "tile" and table[pickle.loads(data)[1]] == "size"
