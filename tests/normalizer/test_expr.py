"""The derived-tag expression evaluator (normalizer.expr): every allowed construct gives Python's own
result, every refused one an ExprError that names it and where, every evaluation failure an EvalError
that says why, and random arithmetic agrees with Python. Pure: no servers needed."""

from __future__ import annotations

import dataclasses
import math
import timeit
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from normalizer.expr import FUNCTIONS, EvalError, ExprError, compile_expression


def _clamp(x: Any, lo: Any, hi: Any) -> Any:
    return lo if x < lo else hi if x > hi else x


#: the oracle's namespace: Python itself evaluates the same text (test code only; the text is ours)
PYTHON: dict[str, Any] = {
    "abs": abs, "min": min, "max": max, "round": round, "sqrt": math.sqrt, "floor": math.floor,
    "ceil": math.ceil, "exp": math.exp, "log": math.log, "log10": math.log10, "sin": math.sin, "cos": math.cos,
    "tan": math.tan, "pow": pow, "int": int, "float": float, "bool": bool, "clamp": _clamp,
    "true": True, "false": False,
}  # fmt: skip


def python(text: str, values: dict[str, Any]) -> Any:
    return eval(text.strip(), {"__builtins__": {}, **PYTHON}, dict(values))


VALUES: dict[str, Any] = {
    "flow_m3h": 36.0, "t1": 20.5, "t2": 31.0, "t3": 25, "a": 4, "running": True, "x": 7, "y": 2.5,
    "temp_f": 212, "door_open": False, "speed": 12, "n": -7, "b": 0, "ok": True, "f": 0.25, "big": 2**70,
}  # fmt: skip

ALLOWED = [
    # the examples
    "flow_m3h / 3.6", "max(t1, t2, t3)", "a if running else 0", "abs(x - y) > 5", "(temp_f - 32) * 5 / 9",
    "not door_open and speed > 10", "max(t1, t2, t3) - 0.5 * t1",
    # arithmetic: int stays int where Python keeps it, / gives a float
    "1 + 2 * 3 - 4", "x / 7", "x // 2", "n // 2", "y // 2", "x % 3", "n % 3", "y % 1", "-n % 3.5", "x * 2",
    "x ** 2", "2 ** 10", "2 ** -1", "y ** 0.5", "n ** 3", "(-8) ** (1 / 3) if false else 0", "x ** y",
    "2 ** 3 ** 2", "big * 2", "big // 3", "x ** 64", "(x ** 64) ** 2",
    # unary
    "-x", "+y", "--x", "-(-n)", "not x", "not b", "not not y",
    # comparisons, chained too
    "x < y", "x > y", "x <= 7", "x >= 7", "x == 7", "x != 7", "1 < x < 10", "1 < x > 10", "x == 7 != y",
    "x <= 7 >= y", "0 < y < x < 10 < big",
    # and / or return an operand, as in Python
    "a or b", "b or a", "a and b", "b and a", "ok and x", "b and 1 / b", "ok or 1 / b", "not ok or x > 3",
    # conditionals
    "a if not running else 0", "(x if y > 2 else n) * 2", "x if b else y if ok else n",
    # constants
    "True", "False", "true", "false", "true and x", "1.5", "42", "1e300", "0x1F", "1_000",
    # a bool input in arithmetic is 0/1, like Python
    "running + running", "running * 10", "-running", "door_open / 2", "running ** 2",
    # the functions
    "abs(n)", "abs(y)", "min(x, y)", "min(x, y, n)", "max(t1, t2)", "round(y)", "round(f, 1)", "round(2.675, 2)",
    "round(x, -1)", "round(y, 1000)", "round(y, -1000)", "round(n, -500)", "round(big, -20000)",
    "sqrt(x)", "floor(y)", "ceil(y)", "floor(n / 2)", "exp(f)", "log(x)", "log(x, 2)",
    "log10(x)", "sin(y)", "cos(y)", "tan(y)", "pow(x, 3)", "pow(y, 0.5)", "pow(2, -2)", "int(y)", "int(n / 2)",
    "int(running)", "float(x)", "bool(b)", "bool(y)", "clamp(x, 0, 5)", "clamp(n, 0, 5)", "clamp(y, 0, 5)",
    "clamp(y, 0.5, 0.5)", "max(abs(n), min(x, 3), round(y))",
    # layout: parentheses, newlines inside them, blanks around
    "((x))", "(x\n + y)", "  x + 1  ",
]  # fmt: skip


@pytest.mark.parametrize("text", ALLOWED)
def test_allowed_constructs_evaluate_as_python_does(text: str) -> None:
    got = compile_expression(text).evaluate(VALUES)
    expected = python(text, VALUES)
    assert got == expected
    assert type(got) is type(expected)


def test_results_keep_pythons_types() -> None:
    assert compile_expression("x * 2").evaluate({"x": 3}) == 6
    assert type(compile_expression("x * 2").evaluate({"x": 3})) is int
    assert type(compile_expression("x / 1").evaluate({"x": 3})) is float
    assert compile_expression("x + x").evaluate({"x": True}) == 2
    assert compile_expression("x > 1").evaluate({"x": 3}) is True
    assert compile_expression("round(x)").evaluate({"x": 2.5}) == 2  # banker's rounding, as in Python


def test_round_to_a_huge_number_of_digits_does_not_stall() -> None:
    expr = compile_expression("round(x, n)")
    assert expr.evaluate({"x": 5, "n": -(10**9)}) == 0
    assert type(expr.evaluate({"x": 5, "n": -(10**9)})) is int
    assert expr.evaluate({"x": 2.5, "n": 10**9}) == 2.5
    assert math.copysign(1, expr.evaluate({"x": -2.5, "n": -(10**9)})) == -1  # -0.0, as Python gives


def test_tag_call_names_a_tag_that_is_not_an_identifier() -> None:
    expr = compile_expression('tag("line-1 speed") * 2 + tag("x") + x')
    assert expr.names == frozenset({"line-1 speed", "x"})
    assert expr.evaluate({"line-1 speed": 3, "x": 1.5}) == 9.0


def test_names_are_the_tags_read() -> None:
    assert compile_expression("max(t1, t2, t3) - 0.5 * t1").names == frozenset({"t1", "t2", "t3"})
    assert compile_expression("a if running else 0").names == frozenset({"a", "running"})
    assert compile_expression("true or false or True").names == frozenset()
    assert compile_expression("sqrt(2) + abs(-1)").names == frozenset()
    assert compile_expression("x ** y").names == frozenset({"x", "y"})
    assert compile_expression("pow(x, 2) + clamp(v, lo, hi)").names == frozenset({"x", "v", "lo", "hi"})


def test_expression_is_frozen_and_slotted() -> None:
    expr = compile_expression("x + 1")
    assert expr.text == "x + 1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        expr.text = "y"  # type: ignore[misc]
    assert not hasattr(expr, "__dict__")
    assert expr == compile_expression("x + 1")


@pytest.mark.parametrize("text", ["max(t1, t2, t3) - 0.5 * t1", "x ** y if tag('a b') else clamp(x, 0, 1)",
                                  "not door_open and speed > 10", "round(y, 2) + floor(2 ** 0.5)"])
def test_compiled_code_reaches_only_the_whitelist(text: str) -> None:
    expr = compile_expression(text)
    allowed = set(FUNCTIONS) | {"_pow", "_in"}
    for fn in (expr._fast, expr._lazy):
        assert set(fn.__code__.co_names) <= allowed
        assert fn.__globals__["__builtins__"] == {}
        assert all(isinstance(c, (int, float, str, type(None))) for c in fn.__code__.co_consts)


FORBIDDEN = [
    ("__import__('os')", "'__import__' is not an allowed function; allowed: abs, bool, ceil, clamp, cos, exp, "
                         "float, floor, int, log, log10, max, min, pow, round, sin, sqrt, tag, tan (at column 1"),
    ("().__class__", "attribute access is not allowed (at column 1: '().__class__')"),
    ("[1][0]", "a subscript is not allowed (at column 1: '[1][0]')"),
    ("lambda: 1", "lambda is not allowed"),
    ("(lambda: 1)()", "lambda is not allowed"),
    ("'a' + 'b'", "a string is not allowed (only tag(\"name\") takes one) (at column 1: \"'a'\")"),
    ("x.y", "attribute access is not allowed (at column 1: 'x.y')"),
    ("1 + x.y", "attribute access is not allowed (at column 5: 'x.y')"),
    ("math.sqrt(x)", "attribute access is not allowed"),
    ("f(**k)", "'f' is not an allowed function"),
    ("max(**k)", "a keyword argument is not allowed (in max()) (at column 5: '**k')"),
    ("round(x, ndigits=2)", "a keyword argument is not allowed (in round()) (at column 10: 'ndigits=2')"),
    ("max(*xs)", "a starred argument is not allowed (at column 5: '*xs')"),
    ("9**9**9", "the exponent 387420489 is too large (a constant exponent is at most 64 in magnitude) "
                "(at column 4: '9**9')"),
    ("x ** 65", "the exponent 65 is too large"),
    ("x ** -100.5", "the exponent -100.5 is too large"),
    ("pow(x, 1000)", "the exponent 1000 is too large"),
    ("x ** (1 / 0)", "the exponent cannot be computed: division by zero"),
    ("x ** (1e308 * 10)", "the exponent inf is too large"),
    ("[x for x in y]", "a comprehension is not allowed"),
    ("sum(x for x in y)", "'sum' is not an allowed function"),
    ("max(x for x in y)", "a generator expression is not allowed"),
    ("f'{x}'", "an f-string is not allowed"),
    ("(y := 1)", "':=' is not allowed"),
    ("(1, 2)", "a tuple is not allowed"),
    ("[x]", "a list is not allowed"),
    ("{x}", "a set is not allowed"),
    ("{}", "a dict is not allowed"),
    ("x & y", "the operator '&' is not allowed (for logic write 'and')"),
    ("x | y", "the operator '|' is not allowed (for logic write 'or')"),
    ("x ^ y", "the operator '^' is not allowed"),
    ("1 << 100000", "the operator '<<' is not allowed"),
    ("x @ y", "the operator '@' is not allowed"),
    ("~x", "the operator '~' is not allowed"),
    ("x is None", "the operator 'is' is not allowed"),
    ("x in y", "the operator 'in' is not allowed"),
    ("1 < x not in y", "the operator 'not in' is not allowed"),
    ("None", "None is not allowed"),
    ("1j", "a complex number is not allowed"),
    ("b'x'", "bytes is not allowed"),
    ("...", "'...' is not allowed"),
    ("1e999", "a number too large for a float is not allowed"),
    ("sqrt(x, y)", "sqrt() takes 1 argument, got 2"),
    ("min(x)", "min() takes at least 2 arguments, got 1"),
    ("round()", "round() takes 1 or 2 arguments, got 0"),
    ("clamp(x, 1)", "clamp() takes 3 arguments, got 2"),
    ("pow(x, 2, 5)", "pow() takes 2 arguments, got 3"),
    ("tag(x)", 'tag() takes one non-empty string, the tag\'s name: tag("line-1 speed")'),
    ("tag('')", "tag() takes one non-empty string"),
    ("tag('a', 'b')", "tag() takes one non-empty string"),
    ("max", "'max' is a function: call it, or write tag('max') for a tag"),
    ("tag + 1", "'tag' is a function"),
    ("(1)(2)", "only a function's name can be called"),
    ("getattr(x, 'y')", "'getattr' is not an allowed function"),
    ("eval('1')", "'eval' is not an allowed function"),
    ("x +", "syntax error: invalid syntax (at the end)"),
    ("x y", "syntax error: invalid syntax (at column 3)"),
    ("x = 1", "syntax error"),
    ("import os", "syntax error"),
    ("x if y", "syntax error"),
    ("x\0", "syntax error"),  # Python 3.12+ says so; 3.11's parser raises ValueError
    ("", "the expression is empty"),
    ("   ", "the expression is empty"),
    ("-" * 300 + "x", "the expression is nested more than 200 levels deep (at column 202:"),
    ("(x +\n y.z)", "attribute access is not allowed (at line 2, column 2: 'y.z')"),
    ('tag("é") + x.y', "attribute access is not allowed (at column 12: 'x.y')"),  # columns count characters
    ("   x.y", "attribute access is not allowed (at column 4: 'x.y')"),  # columns in the text as written
    ("\n  (1 +\n x.y)", "attribute access is not allowed (at line 3, column 2: 'x.y')"),
    ("\n  1 +\n x", "syntax error: invalid syntax (at line 2, column 6)"),
    ("\n  1 + x.y", "attribute access is not allowed (at line 2, column 7: 'x.y')"),
    ("  x y", "syntax error: invalid syntax (at column 5)"),
    ("x" * 1001, "the expression is 1001 characters long; at most 1000 allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), FORBIDDEN)
def test_forbidden_constructs_are_refused_with_a_precise_message(text: str, message: str) -> None:
    with pytest.raises(ExprError) as info:
        compile_expression(text)
    if text == "x\0" and "null bytes" in str(info.value):
        return
    assert message in str(info.value)
    assert info.value.text == text


def test_expr_error_carries_the_position() -> None:
    with pytest.raises(ExprError) as info:
        compile_expression("(x +\n y.z)")
    assert (info.value.line, info.value.column) == (2, 2)
    with pytest.raises(ExprError, match="at most 20 allowed"):
        compile_expression("x + 1 + 2 + 3 + 4 + 5", max_length=20)
    assert compile_expression("x + 1 + 2 + 3 + 4 + 5", max_length=21).evaluate({"x": 0}) == 15


def test_an_error_message_quotes_a_bounded_prefix() -> None:
    with pytest.raises(ExprError) as info:
        compile_expression("(" + " + ".join(["x"] * 100) + ").y")
    assert len(str(info.value)) < 200


EVAL_ERRORS = [
    ("x + 1", {"x": None}, "missing input 'x'"),
    ("x + 1", {}, "missing input 'x'"),
    ("x + 1", {"x": "3"}, "input 'x' is a str, not a number"),
    ("x * 2", {"x": [1]}, "input 'x' is a list, not a number"),
    ("max(a, b)", {"a": 1, "b": None}, "missing input 'b'"),
    ("tag('line 1') + 1", {}, "missing input 'line 1'"),
    ("1 / 0", {}, "division by zero"),
    ("x / y", {"x": 1, "y": 0}, "division by zero"),
    ("x // y", {"x": 1.5, "y": 0.0}, "division by zero"),
    ("x % 0", {"x": 1}, "division by zero"),
    ("x ** -1", {"x": 0}, "division by zero"),
    ("log(x, 1)", {"x": 2}, "division by zero"),
    ("log(x)", {"x": 0}, "invalid argument: math domain error"),
    ("sqrt(x)", {"x": -1}, "invalid argument: math domain error"),
    ("x * 0", {"x": math.inf}, "the result is NaN"),
    ("x - x", {"x": math.inf}, "the result is NaN"),
    ("x * 10", {"x": 1e308}, "the result is infinite"),
    ("-x * 10", {"x": 1e308}, "the result is infinite"),
    ("exp(x)", {"x": 1000}, "overflow: math range error"),
    ("x ** 64", {"x": 1e10}, "overflow"),
    ("float(x)", {"x": 10**400}, "overflow: int too large to convert to float"),
    ("x + 0.5", {"x": 10**400}, "overflow"),
    ("int(x * 10)", {"x": 1e308}, "overflow: cannot convert float infinity to integer"),
    ("int(x * 0)", {"x": math.inf}, "invalid argument: cannot convert float NaN to integer"),
    ("round(x, y)", {"x": 1.5, "y": 1.5}, "wrong type"),
    ("x ** y", {"x": 3, "y": 10**9}, "overflow: an integer power of more than 10000 bits"),
    ("(x ** 64) ** 64", {"x": 2**64}, "overflow: an integer power of more than 10000 bits"),
    ("x ** 0.5", {"x": -8}, "a negative number to a fractional power (the result would be complex)"),
    ("pow(x, y)", {"x": -8.0, "y": 1 / 3}, "a negative number to a fractional power"),
    ("round(x, y)", {"x": 2**40000, "y": -10**9}, "overflow: round() of a huge integer"),
    ("clamp(x, 10, 0)", {"x": 5}, "clamp: the lower bound 10 is above the upper bound 0"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "values", "message"), EVAL_ERRORS)
def test_evaluation_failures_are_eval_errors_that_say_why(text: str, values: dict[str, Any], message: str) -> None:
    expr = compile_expression(text)
    with pytest.raises(EvalError) as info:
        expr.evaluate(values)
    assert message in str(info.value)


def test_eval_error_names_the_missing_input() -> None:
    with pytest.raises(EvalError) as info:
        compile_expression("a + b").evaluate({"a": 1})
    assert info.value.input == "b"
    with pytest.raises(EvalError) as info:
        compile_expression("1 / a").evaluate({"a": 0})
    assert info.value.input is None


def test_an_input_is_needed_only_when_evaluation_reaches_it() -> None:
    expr = compile_expression("a if running else 0")
    assert expr.evaluate({"a": None, "running": False}) == 0
    assert expr.evaluate({"running": False}) == 0
    assert expr.evaluate({"a": 4.5, "running": True}) == 4.5
    with pytest.raises(EvalError, match="missing input 'a'"):
        expr.evaluate({"a": None, "running": True})
    assert compile_expression("ok or x").evaluate({"ok": True, "x": None}) is True
    assert compile_expression("ok and x").evaluate({"ok": False}) is False
    with pytest.raises(EvalError, match="missing input 'x'"):
        compile_expression("ok and x").evaluate({"ok": True})
    assert compile_expression("1 / b if b else x").evaluate({"x": None, "b": 2}) == 0.5


def test_number_subclasses_take_the_lazy_path_with_the_same_result() -> None:
    class Reading(float):
        pass

    expr = compile_expression("max(t1, t2, t3) - 0.5 * t1")
    plain = {"t1": 1.5, "t2": 7.25, "t3": 3}
    assert expr.evaluate({k: Reading(v) for k, v in plain.items()}) == expr.evaluate(plain) == 6.5


# -- random arithmetic against Python itself ------------------------------------------------------------

LEAVES = st.sampled_from(["x", "y", "z", "0", "1", "2", "7", "0.5", "3.25", "1e-3", "true", "false"])


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.sampled_from(["+", "-", "*", "/", "//", "%", "<", "<=", "==", "!=", "and", "or"])
    return st.one_of(
        st.tuples(children, binary, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, st.sampled_from(["2", "3", "0.5", "-1", "0", "-2.5"])).map(lambda t: f"({t[0]} ** {t[1]})"),
        st.tuples(st.sampled_from(["-", "+", "not "]), children).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(st.sampled_from(["abs", "sqrt", "floor", "ceil", "exp", "log", "sin", "round", "int", "float"]),
                  children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["min", "max", "round", "log", "pow"]), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2] if t[0] not in ('round', 'pow') else '2'})"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(children, children, children).map(lambda t: f"clamp({t[0]}, {t[1]}, {t[1]} + abs({t[2]}))"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} < {t[1]} <= {t[2]})"),
    )


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=12)
FLOATS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
NUMBERS = st.one_of(FLOATS, st.integers(min_value=-1000, max_value=1000), st.booleans())


def _check_against_python(text: str, values: dict[str, Any]) -> None:
    expr = compile_expression(text)
    try:
        expected = python(text, values)
    except (ArithmeticError, ValueError, TypeError):
        expected = None  # Python raises: so must we
    if isinstance(expected, complex) or (isinstance(expected, float) and not math.isfinite(expected)):
        expected = None  # a complex, NaN or infinite result is no value
    try:
        got = expr.evaluate(values)
    except EvalError as exc:
        # our two deliberate limits Python lacks: a huge integer power, and a complex number on the way
        # (Python goes on with it: `not (-1) ** 0.5` is False; a derived tag's value is a real number)
        assume("integer power of more than" not in str(exc) and "fractional power" not in str(exc))
        assert expected is None, f"{text} with {values}: EvalError {exc}, Python gives {expected!r}"
        return
    assert expected is not None, f"{text} with {values}: {got!r}, Python raises"
    assert got == expected
    assert type(got) is type(expected)


@settings(max_examples=400, deadline=None)
@given(EXPRESSIONS, FLOATS, FLOATS, FLOATS)
def test_random_expressions_over_floats_match_python(text: str, x: float, y: float, z: float) -> None:
    _check_against_python(text, {"x": x, "y": y, "z": z})


@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS, NUMBERS, NUMBERS, NUMBERS)
def test_random_expressions_over_mixed_numbers_match_python(text: str, x: Any, y: Any, z: Any) -> None:
    _check_against_python(text, {"x": x, "y": y, "z": z})


@settings(max_examples=200, deadline=None)
@given(EXPRESSIONS, NUMBERS, NUMBERS, NUMBERS)
def test_lazy_and_fast_variants_agree(text: str, x: Any, y: Any, z: Any) -> None:
    expr = compile_expression(text)
    values = {"x": x, "y": y, "z": z}
    outcomes: list[tuple[str, object]] = []
    for mapping in (values, _Reread(values)):
        try:
            outcomes.append(("value", expr.evaluate(mapping)))
        except EvalError as exc:
            outcomes.append(("error", str(exc)))
    assert outcomes[0] == outcomes[1]


class _Reread(dict[str, Any]):
    """A mapping the fast variant cannot use (its itemgetter sees a missing key): forces the lazy one."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)


def test_speed_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Evaluations per second of a 3-input expression on one core: printed, not asserted."""
    expr = compile_expression("max(t1, t2, t3) - 0.5 * t1")
    values = {"t1": 20.5, "t2": 31.0, "t3": 25.25, "other": 1.0}
    number = 100_000
    best = min(timeit.repeat(lambda: expr.evaluate(values), number=number, repeat=3))
    with capsys.disabled():
        print(f"\nnormalizer.expr: {number / best:,.0f} evaluations/s of {expr.text!r}")
