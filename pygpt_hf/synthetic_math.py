"""Synthetic math and LaTeX instruction data whose answers are computed exactly, never guessed.

Seven kinds of problem, each asked either in plain words ("What is 3/4 + 1/6?") or in LaTeX
("Compute $\\frac{3}{4} + \\frac{1}{6}$."), with a short worked answer in the same notation:

    arithmetic         12 × 7 - 5 = 84 - 5 = 79              (precedence shown step by step)
    fraction           3/4 + 1/6 = 9/12 + 2/12 = 11/12       (common denominator, then lowest terms)
    power              (-3)^4 = (-3) × (-3) × (-3) × (-3) = 81
    equation           3x + 5 = 7x - 2  ->  -4x = -7  ->  x = 7/4
    derivative         d/dx (3x^3 - 2x + 1) = 9x^2 - 2        (power rule, term by term)
    integral           ∫ (3x^2 + 2x) dx = x^3 + x^2 + C
    definite_integral  F(2) - F(-1) with F an antiderivative

Every number is an `int` or a `fractions.Fraction`, so every step is exact. The last line of a response
always ends with "= <answer>" (plus "+ C" for indefinite integrals), and each record carries a
machine-readable `meta` with the problem and the answer in sympy syntax, so a checker can recompute the
answer independently (tests/test_synthetic_math.py does, with sympy).

Records are shaped like Databricks Dolly-15k rows, so `--format dolly` trains on them as they are:

    {"instruction": ..., "context": "", "response": ..., "category": "math",
     "meta": {"kind": ..., "style": "words" | "latex", "question_math": <the math as shown in the
              instruction>, "expression": <the same in sympy syntax>, "answer": <sympy syntax>,
              "lower"/"upper": <bounds, definite integrals only>}}

The same seed gives the same records: all randomness comes from one `random.Random(seed)`.
"""

from __future__ import annotations

import json
import math
import operator
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction

KINDS = ("arithmetic", "fraction", "power", "equation", "derivative", "integral", "definite_integral")
STYLES = ("words", "latex")
CATEGORY = "math"

# ----------------------------------------------------------------------------------------------------------
# Formatting numbers, operators and polynomials in three notations: "words" (plain text a person types),
# "latex", and "sympy" (for `meta`, parsed by sympy's `sympify`).

OPERATORS = {  # symbol -> (words, latex, sympy)
    "+": ("+", "+", "+"),
    "-": ("-", "-", "-"),
    "*": ("×", "\\times", "*"),
    "/": ("÷", "\\div", "/"),
}
_STYLE_INDEX = {"words": 0, "latex": 1, "sympy": 2}


def fmt_number(q: Fraction | int, style: str) -> str:
    """A number on its own: 5, -7/4, \\frac{7}{4} (negative sign in front)."""
    q = Fraction(q)
    if q.denominator == 1:
        return str(q.numerator)
    sign = "-" if q < 0 else ""
    n, d = abs(q.numerator), q.denominator
    return f"{sign}\\frac{{{n}}}{{{d}}}" if style == "latex" else f"{sign}{n}/{d}"


def fmt_ratio(n: int, d: int, style: str) -> str:
    """n/d exactly as written, not reduced (for the middle steps of a calculation, e.g. 9/12)."""
    if d == 1:
        return str(n)
    sign = "-" if n < 0 else ""
    return f"{sign}\\frac{{{abs(n)}}}{{{d}}}" if style == "latex" else f"{sign}{abs(n)}/{d}"


def parens(text: str, style: str) -> str:
    return f"\\left({text}\\right)" if style == "latex" else f"({text})"


def fmt_operand(q: Fraction | int, style: str, tight: bool = False) -> str:
    """A number inside a larger expression: negatives get parentheses (3 - (-2)), and so do fractions when
    `tight` (next to × ÷ ^ in plain text, where 3/4 ÷ 2/5 would read as ((3/4) ÷ 2)/5)."""
    q = Fraction(q)
    text = fmt_number(q, style)
    if q < 0 or (tight and q.denominator != 1 and style != "latex"):
        return parens(text, style)
    return text


def fmt_expression(values: list[Fraction], ops: list[str], style: str) -> str:
    """values[0] ops[0] values[1] ops[1] ... in the given notation."""
    tight = any(op in "*/" for op in ops)
    first = values[0]  # a leading minus needs no parentheses: -600 - 33
    parts = [("-" + fmt_operand(-first, style, tight)) if first < 0 else fmt_operand(first, style, tight)]
    for op, value in zip(ops, values[1:]):
        parts += [OPERATORS[op][_STYLE_INDEX[style]], fmt_operand(value, style, tight)]
    return " ".join(parts)


def fmt_power_of_x(n: int, style: str) -> str:
    if n == 1:
        return "x"
    return {"words": f"x^{n}", "latex": f"x^{{{n}}}", "sympy": f"x**{n}"}[style]


def fmt_monomial(magnitude: Fraction, n: int, style: str) -> str:
    """|c| x^n without its sign: 3x^2, x, (1/3)x^3, \\frac{1}{3}x^{3}, 3*x**2."""
    if n == 0:
        return fmt_number(magnitude, style)
    x = fmt_power_of_x(n, style)
    if magnitude == 1:
        return x
    coefficient = fmt_number(magnitude, style)
    if style == "sympy":
        return f"({coefficient})*{x}" if magnitude.denominator != 1 else f"{coefficient}*{x}"
    if style == "words" and magnitude.denominator != 1:
        return f"({coefficient}){x}"
    return f"{coefficient}{x}"


def fmt_poly(coeffs: list[Fraction], style: str) -> str:
    """A polynomial in x from its coefficients (coeffs[k] multiplies x^k), highest power first."""
    terms = [(n, Fraction(c)) for n, c in reversed(list(enumerate(coeffs))) if c != 0]
    if not terms:
        return "0"
    n, c = terms[0]
    text = ("-" if c < 0 else "") + fmt_monomial(abs(c), n, style)
    for n, c in terms[1:]:
        text += (" - " if c < 0 else " + ") + fmt_monomial(abs(c), n, style)
    return text


# ----------------------------------------------------------------------------------------------------------
# Exact calculus on coefficient lists


def derivative(coeffs: list[Fraction]) -> list[Fraction]:
    """d/dx sum c_k x^k = sum k c_k x^(k-1)."""
    return [k * c for k, c in enumerate(coeffs)][1:] or [Fraction(0)]


def antiderivative(coeffs: list[Fraction]) -> list[Fraction]:
    """The antiderivative with constant 0: sum c_k x^(k+1) / (k+1)."""
    return [Fraction(0)] + [Fraction(c) / (k + 1) for k, c in enumerate(coeffs)]


def evaluate(coeffs: list[Fraction], x: Fraction | int) -> Fraction:
    return sum((Fraction(c) * Fraction(x) ** k for k, c in enumerate(coeffs)), Fraction(0))


def apply_op(op: str, a: Fraction, b: Fraction) -> Fraction:
    return {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](a, b)


def reduction_steps(values: list[Fraction], ops: list[str]) -> list[tuple[list[Fraction], list[str]]]:
    """Evaluate by precedence, one operation at a time: × and ÷ first (leftmost first), then + and -."""
    states = [(values, ops)]
    while ops:
        i = next((k for k, op in enumerate(ops) if op in "*/"), 0)
        result = apply_op(ops[i], values[i], values[i + 1])
        values = values[:i] + [result] + values[i + 2:]
        ops = ops[:i] + ops[i + 1:]
        states.append((values, ops))
    return states


# ----------------------------------------------------------------------------------------------------------
# Problem makers: each returns (instruction, response, meta) for one random problem in one style.
# `rng` is the only source of randomness.

Problem = tuple[str, str, dict]


def _meta(kind: str, style: str, question_math: str, expression: str, answer: str, **extra) -> dict:
    return {"kind": kind, "style": style, "question_math": question_math, "expression": expression,
            "answer": answer, **extra}


def _ask(rng: random.Random, style: str, math_text: str, words: list[str], latex: list[str]) -> str:
    """One of the phrasings for this style, with the math filled in."""
    return rng.choice(words if style == "words" else latex).format(m=math_text)


def _math(text: str, style: str) -> str:
    """Math inside a sentence: LaTeX goes between $...$."""
    return f"${text}$" if style == "latex" else text


def make_arithmetic(rng: random.Random, style: str) -> Problem:
    if rng.random() < 0.25:  # an exact division a ÷ b
        b = rng.randint(2, 12)
        values, ops = [Fraction(b * rng.randint(-12, 20)), Fraction(b)], ["/"]
    else:
        count = rng.choice([2, 3, 3])
        values = [Fraction(rng.randint(-20, 99)) for _ in range(count)]
        ops = [rng.choice("+-*") for _ in range(count - 1)]
        for i, op in enumerate(ops):  # keep products small enough to do by hand
            if op == "*":
                values[i + 1] = Fraction(rng.randint(-12, 12))
    states = reduction_steps(values, ops)
    question = fmt_expression(values, ops, style)
    chain = " = ".join(fmt_expression(v, o, style) if o else fmt_number(v[0], style) for v, o in states)
    answer = states[-1][0][0]
    instruction = _ask(rng, style, question,
                       ["What is {m}?", "Calculate {m}.", "Work out {m}.", "Compute {m}, step by step."],
                       ["Compute ${m}$.", "What is ${m}$?", "Evaluate ${m}$ and write the steps in LaTeX."])
    return instruction, _math(chain, style), _meta(
        "arithmetic", style, question, fmt_expression(values, ops, "sympy"), fmt_number(answer, "sympy"))


def make_fraction(rng: random.Random, style: str) -> Problem:
    b, d = rng.randint(2, 12), rng.randint(2, 12)
    a = rng.choice([n for n in range(1, 2 * b) if math.gcd(n, b) == 1])  # a/b and c/d in lowest terms
    c = rng.choice([n for n in range(1, 2 * d) if math.gcd(n, d) == 1])
    op = rng.choice("+-*/")
    x, y = Fraction(a, b), Fraction(c, d)
    sym = OPERATORS[op][_STYLE_INDEX[style]]

    def shown(n1, d1, n2, d2, operator):  # two fractions exactly as written, parenthesised in plain × ÷
        left, right = fmt_ratio(n1, d1, style), fmt_ratio(n2, d2, style)
        if style == "words" and operator in "×÷":
            left, right = parens(left, style), parens(right, style)
        return f"{left} {operator} {right}"

    steps = [shown(a, b, c, d, sym)]
    if op in "+-":  # rewrite both over the least common denominator
        lcd = math.lcm(b, d)
        if b != d:
            steps.append(shown(a * lcd // b, lcd, c * lcd // d, lcd, sym))
        numerator, denominator = (a * lcd // b + c * lcd // d if op == "+" else a * lcd // b - c * lcd // d), lcd
    elif op == "*":
        numerator, denominator = a * c, b * d
    else:  # dividing by c/d is multiplying by d/c
        steps.append(shown(a, b, d, c, OPERATORS["*"][_STYLE_INDEX[style]]))
        numerator, denominator = a * d, b * c
    answer = apply_op(op, x, y)
    steps.append(fmt_ratio(numerator, denominator, style))
    if Fraction(numerator, denominator).denominator != denominator:  # not yet in lowest terms
        steps.append(fmt_number(answer, style))
    question = steps[0]
    instruction = _ask(rng, style, question,
                       ["What is {m}? Give the answer in lowest terms.", "Calculate {m}.",
                        "Work out {m} and simplify the result."],
                       ["Compute ${m}$ and simplify.", "What is ${m}$? Answer in LaTeX.",
                        "Simplify ${m}$."])
    expression = f"({a}/{b}) {OPERATORS[op][2]} ({c}/{d})"
    return instruction, _math(" = ".join(steps), style), _meta(
        "fraction", style, question, expression, fmt_number(answer, "sympy"))


def _fmt_pow(base: str, exponent: int, style: str) -> str:
    return f"{base}^{{{exponent}}}" if style == "latex" else (f"{base}^{exponent}" if exponent >= 0 else f"{base}^({exponent})")


def make_power(rng: random.Random, style: str) -> Problem:
    shape = rng.choice(["integer", "integer", "fraction", "negative_exponent"])
    if shape == "integer":
        base = Fraction(rng.choice([b for b in range(-9, 13) if b not in (0, 1)]))
        exponent = rng.randint(0, 4 if abs(base) > 5 else 6)
    elif shape == "fraction":
        d = rng.randint(2, 6)
        base, exponent = Fraction(rng.choice([n for n in range(1, 2 * d) if math.gcd(n, d) == 1]), d), rng.randint(2, 3)
    else:
        base, exponent = Fraction(rng.randint(2, 5)), -rng.randint(1, 3)
    answer = base ** exponent
    base_text = fmt_operand(base, style, tight=True)
    if style == "latex" and base.denominator != 1:
        base_text = parens(base_text, style)
    steps = [_fmt_pow(base_text, exponent, style)]
    if shape == "fraction":  # (a/b)^n = a^n / b^n
        n, d = base.numerator, base.denominator
        steps.append(f"\\frac{{{n}^{{{exponent}}}}}{{{d}^{{{exponent}}}}}" if style == "latex"
                     else f"{n}^{exponent}/{d}^{exponent}")
    elif shape == "negative_exponent":  # a^-n = 1 / a^n
        steps.append(f"\\frac{{1}}{{{_fmt_pow(base_text, -exponent, style)}}}" if style == "latex"
                     else f"1/{_fmt_pow(base_text, -exponent, style)}")
    elif 2 <= exponent <= 4:  # repeated multiplication, written out
        steps.append(f" {OPERATORS['*'][_STYLE_INDEX[style]]} ".join([base_text] * exponent))
    steps.append(fmt_number(answer, style))
    question = steps[0]
    instruction = _ask(rng, style, question,
                       ["What is {m}?", "Calculate {m}.", "Evaluate the power {m}."],
                       ["Evaluate ${m}$.", "What is ${m}$?", "Compute ${m}$ exactly."])
    expression = f"({fmt_number(base, 'sympy')})**({exponent})"
    return instruction, _math(" = ".join(steps), style), _meta(
        "power", style, question, expression, fmt_number(answer, "sympy"))


def make_equation(rng: random.Random, style: str) -> Problem:
    """a x + b = c x + d, solved by collecting terms then dividing: x = (d - b) / (a - c)."""
    a = rng.choice([k for k in range(-9, 10) if k != 0])
    c = 0 if rng.random() < 0.5 else rng.choice([k for k in range(-9, 10) if k not in (0, a)])
    b = rng.choice([k for k in range(-20, 21) if k != 0])
    d = rng.randint(-20, 20)
    left, right = [Fraction(b), Fraction(a)], [Fraction(d), Fraction(c)]
    equation = f"{fmt_poly(left, style)} = {fmt_poly(right, style)}"
    x_coeff, constant = a - c, d - b
    answer = Fraction(constant, x_coeff)
    x = _math("x", style)
    lines = []
    if x_coeff == 1:
        lines.append(f"Collect the {x} terms on the left and the numbers on the right: "
                     f"{_math(f'x = {constant}', style)}.")
    else:
        lines.append(f"Collect the {x} terms on the left and the numbers on the right: "
                     f"{_math(f'{fmt_poly([Fraction(0), Fraction(x_coeff)], style)} = {constant}', style)}.")
        lines.append(f"Divide both sides by {_math(str(x_coeff), style)}: "
                     f"{_math('x = ' + fmt_number(answer, style), style)}.")
    instruction = _ask(rng, style, equation,
                       ["Solve for x: {m}.", "Find x if {m}.", "What value of x satisfies {m}?"],
                       ["Solve ${m}$ for $x$.", "Find $x$ such that ${m}$.", "Solve the equation ${m}$."])
    expression = f"Eq({fmt_poly(left, 'sympy')}, {fmt_poly(right, 'sympy')})"
    return instruction, "\n".join(lines), _meta("equation", style, equation, expression, fmt_number(answer, "sympy"))


def _random_poly(rng: random.Random, max_degree: int) -> list[Fraction]:
    degree = rng.randint(1, max_degree)
    coeffs = [Fraction(rng.randint(-9, 9)) if rng.random() < 0.7 else Fraction(0) for _ in range(degree)]
    return coeffs + [Fraction(rng.choice([k for k in range(-9, 10) if k != 0]))]  # nonzero leading term


def make_derivative(rng: random.Random, style: str) -> Problem:
    p = _random_poly(rng, 4)
    dp = derivative(p)
    shown = fmt_poly(p, style)
    if style == "latex":
        rule = "Apply the power rule $\\frac{d}{dx} x^{n} = n x^{n-1}$ to each term:"
        final = f"$\\frac{{d}}{{dx}}\\left({shown}\\right) = {fmt_poly(dp, style)}$"
    else:
        rule = "Apply the power rule, d/dx x^n = n x^(n-1), to each term:"
        final = f"d/dx ({shown}) = {fmt_poly(dp, style)}"
    instruction = _ask(rng, style, shown,
                       ["Differentiate {m} with respect to x.", "What is the derivative of {m}?",
                        "Find d/dx of {m}."],
                       ["Compute $\\frac{{d}}{{dx}}\\left({m}\\right)$.",
                        "Differentiate ${m}$ with respect to $x$.", "Find $f'(x)$ for $f(x) = {m}$."])
    return instruction, f"{rule}\n{final}", _meta(
        "derivative", style, shown, fmt_poly(p, "sympy"), fmt_poly(dp, "sympy"))


def make_integral(rng: random.Random, style: str) -> Problem:
    p = _random_poly(rng, 3)
    big_p = antiderivative(p)
    shown = fmt_poly(p, style)
    if style == "latex":
        rule = "Use $\\int x^{n} \\, dx = \\frac{x^{n+1}}{n+1} + C$ on each term:"
        final = f"$\\int \\left({shown}\\right) \\, dx = {fmt_poly(big_p, style)} + C$"
    else:
        rule = "Use ∫ x^n dx = x^(n+1)/(n+1) + C on each term:"
        final = f"∫ ({shown}) dx = {fmt_poly(big_p, style)} + C"
    instruction = _ask(rng, style, shown,
                       ["Find the indefinite integral of {m} with respect to x.", "Integrate {m} with respect to x.",
                        "What is the antiderivative of {m}?"],
                       ["Compute $\\int \\left({m}\\right) \\, dx$.", "Integrate ${m}$ with respect to $x$.",
                        "Find the indefinite integral of ${m}$."])
    return instruction, f"{rule}\n{final}", _meta(
        "integral", style, shown, fmt_poly(p, "sympy"), fmt_poly(big_p, "sympy"))


def make_definite_integral(rng: random.Random, style: str) -> Problem:
    p = _random_poly(rng, 3)
    lower = rng.randint(-3, 2)
    upper = rng.randint(lower + 1, 4)
    big_p = antiderivative(p)
    at_upper, at_lower = evaluate(big_p, upper), evaluate(big_p, lower)
    answer = at_upper - at_lower
    shown = fmt_poly(p, style)
    difference = f"{fmt_number(at_upper, style)} - {fmt_operand(at_lower, style)}"
    if style == "latex":
        instruction = rng.choice(["Evaluate $\\int_{{{lo}}}^{{{hi}}} \\left({m}\\right) \\, dx$.",
                                  "Compute the definite integral $\\int_{{{lo}}}^{{{hi}}} \\left({m}\\right) \\, dx$."])
        response = (f"An antiderivative is $F(x) = {fmt_poly(big_p, style)}$, so\n"
                    f"$\\int_{{{lower}}}^{{{upper}}} \\left({shown}\\right) \\, dx = F({upper}) - F({lower}) = "
                    f"{difference} = {fmt_number(answer, style)}$")
    else:
        instruction = rng.choice(["Evaluate the integral of {m} from x = {lo} to x = {hi}.",
                                  "What is the definite integral of {m} between x = {lo} and x = {hi}?"])
        response = (f"An antiderivative is F(x) = {fmt_poly(big_p, style)}, so the integral is\n"
                    f"F({upper}) - F({lower}) = {difference} = {fmt_number(answer, style)}")
    instruction = instruction.format(m=shown, lo=lower, hi=upper)
    return instruction, response, _meta("definite_integral", style, shown, fmt_poly(p, "sympy"),
                                        fmt_number(answer, "sympy"), lower=lower, upper=upper)


MAKERS: dict[str, Callable[[random.Random, str], Problem]] = {
    "arithmetic": make_arithmetic,
    "fraction": make_fraction,
    "power": make_power,
    "equation": make_equation,
    "derivative": make_derivative,
    "integral": make_integral,
    "definite_integral": make_definite_integral,
}


def make_record(rng: random.Random, kind: str, style: str) -> dict:
    """One Dolly-shaped record of the given kind and style."""
    instruction, response, meta = MAKERS[kind](rng, style)
    return {"instruction": instruction, "context": "", "response": response, "category": CATEGORY, "meta": meta}


def generate_records(n: int, seed: int, kinds: tuple[str, ...] = KINDS) -> Iterator[dict]:
    """`n` records, kinds and styles drawn uniformly; the same (n, seed, kinds) gives the same records."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown problem kinds {unknown or '(none given)'}; choose from {', '.join(KINDS)}")
    rng = random.Random(seed)
    for _ in range(n):
        kind = rng.choice(kinds)
        yield make_record(rng, kind, rng.choice(STYLES))


def write_jsonl(path: str, records: Iterable[dict]) -> int:
    """Write one JSON object per line, atomically: a temp file in the same folder, then a rename.

    A crash (or a bad record) leaves the old file, if any, untouched. Keys keep their order and text stays
    UTF-8 (not \\u escapes), so the same records always give the same bytes. Returns the number written.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return count
