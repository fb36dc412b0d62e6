"""Synthetic math data: every answer re-checked with sympy, from the question's own text; same seed, same bytes.

The checks here do not use the generator's arithmetic. For each record, sympy
1. parses the math as shown in the instruction (plain text or LaTeX, by the small converter below) and
   confirms it is the problem stated in `meta["expression"]`;
2. solves that problem itself (evaluate, solve, diff, integrate);
3. parses the final answer out of the response text and compares it with its own result;
4. for worked chains (a = b = c), checks that every step has the same value.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

sympy = pytest.importorskip("sympy")
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from pygpt_hf.synthetic_math import KINDS, STYLES, generate_records, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "generate_synthetic_math.py"
x = sympy.Symbol("x")
TRANSFORMS = standard_transformations + (implicit_multiplication_application, convert_xor)


def load_script():
    spec = importlib.util.spec_from_file_location("generate_synthetic_math", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- an independent reader for the notation the records use -------------------------------------------


def latex_to_plain(text: str) -> str:
    """The LaTeX subset of the records -> plain math sympy can parse."""
    text = text.replace("\\left", "").replace("\\right", "").replace("\\times", "*").replace("\\div", "/")
    text = text.replace("\\,", " ")
    text = re.sub(r"\^\{([^{}]*)\}", r"^(\1)", text)  # x^{3} -> x^(3), before \frac so its braces are flat
    while "\\frac" in text:
        new = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", text)
        assert new != text, f"cannot read {text!r}"
        text = new
    assert "\\" not in text and "{" not in text, f"unexpected LaTeX left in {text!r}"
    return text


def parse_math(text: str, style: str):
    text = latex_to_plain(text) if style == "latex" else text.replace("×", "*").replace("÷", "/")
    return parse_expr(text, local_dict={"x": x}, transformations=TRANSFORMS)


def parse_equation(text: str, style: str):
    left, right = text.split("=")
    return sympy.Eq(parse_math(left, style), parse_math(right, style))


def final_answer(response: str) -> str:
    """What follows the last '=' of the response: the answer, by the records' contract."""
    tail = response.rsplit("=", 1)[1].strip()
    return tail.rstrip(".").strip().strip("$").rstrip(".").strip()


def expected_answer(meta: dict):
    """sympy's own result for the problem in meta["expression"]."""
    kind, expression = meta["kind"], meta["expression"]
    problem = sympy.sympify(expression, locals={"x": x})
    if kind in ("arithmetic", "fraction", "power"):
        return sympy.nsimplify(problem)
    if kind == "equation":
        (solution,) = sympy.solve(problem, x)
        return solution
    if kind == "derivative":
        return sympy.diff(problem, x)
    if kind == "integral":
        return sympy.integrate(problem, x)
    if kind == "definite_integral":
        return sympy.integrate(problem, (x, meta["lower"], meta["upper"]))
    raise AssertionError(f"unknown kind {kind}")


def check_record(record: dict) -> None:
    assert set(record) == {"instruction", "context", "response", "category", "meta"}
    assert record["context"] == "" and record["category"] == "math"
    meta, style, response = record["meta"], record["meta"]["style"], record["response"]
    assert style in STYLES and meta["kind"] in KINDS
    # 1. the instruction shows the problem that meta describes
    assert meta["question_math"] in record["instruction"]
    problem = sympy.sympify(meta["expression"], locals={"x": x})
    if meta["kind"] == "equation":
        shown = parse_equation(meta["question_math"], style)
        assert sympy.simplify((shown.lhs - shown.rhs) - (problem.lhs - problem.rhs)) == 0
    else:
        assert sympy.simplify(parse_math(meta["question_math"], style) - problem) == 0
    if meta["kind"] == "definite_integral":
        lower, upper = meta["lower"], meta["upper"]
        shown_bounds = [f"\\int_{{{lower}}}^{{{upper}}}"] if style == "latex" else [f"x = {lower} ", f"x = {upper}"]
        assert all(b in record["instruction"] for b in shown_bounds)
    # 2 and 3. sympy's answer is the response's answer, and the machine-readable one
    expected = expected_answer(meta)
    answer_text = final_answer(response)
    if meta["kind"] == "integral":
        assert answer_text.endswith("+ C"), response
        answer_text = answer_text[: -len("+ C")]
    assert sympy.simplify(parse_math(answer_text, style) - expected) == 0, (record, expected)
    assert sympy.simplify(sympy.sympify(meta["answer"], locals={"x": x}) - expected) == 0
    if meta["kind"] == "equation":
        assert response.splitlines()[-1].rstrip(".").rstrip("$").split(": ")[-1].lstrip("$").startswith("x = ")
    # 4. every link of a worked chain has the same value; every equation of a solution has the same root
    if meta["kind"] in ("arithmetic", "fraction", "power"):
        steps = response.strip("$").split(" = ")
        assert len(steps) >= 2
        for step in steps:
            assert parse_math(step, style) == expected, (step, record)
    if meta["kind"] == "equation":
        for line in response.splitlines():
            equation_text = line.split(": ", 1)[1].rstrip(".").strip("$")
            assert sympy.solve(parse_equation(equation_text, style), x) == [expected], (line, record)


# ---- tests -----------------------------------------------------------------------------------------


def test_the_checker_catches_a_wrong_answer():
    """The check above can fail: an off-by-one answer, a wrong middle step, or a question that does not
    match its meta are each rejected."""
    record = next(r for r in generate_records(50, seed=2) if r["meta"]["kind"] == "fraction")
    check_record(record)
    head, last = record["response"].rsplit(" = ", 1)
    wrong_answer = dict(record, response=f"{head} = {last.rstrip('$')} + 1" + ("$" if record["response"].endswith("$") else ""))
    with pytest.raises(AssertionError):
        check_record(wrong_answer)
    equation = next(r for r in generate_records(50, seed=2) if r["meta"]["kind"] == "equation")
    check_record(equation)
    wrong_question = dict(equation, meta=dict(equation["meta"], expression="Eq(x, 12345)"))
    with pytest.raises(AssertionError):
        check_record(wrong_question)
    derivative = next(r for r in generate_records(50, seed=2) if r["meta"]["kind"] == "derivative")
    wrong_derivative = dict(derivative, response=derivative["response"].rstrip("$") + " + x" + (
        "$" if derivative["meta"]["style"] == "latex" else ""))
    with pytest.raises(AssertionError):
        check_record(wrong_derivative)


def test_records_load_as_dolly_and_render_through_the_training_template():
    from pygpt_hf.documents import RowStats, render_record

    stats = RowStats()
    record = next(generate_records(1, seed=5))
    (document,) = render_record(record, "dolly", "text", stats)
    assert document.startswith("### Instruction:\n" + record["instruction"])
    assert document.endswith("### Response:\n" + record["response"])


def test_script_writes_records_whose_every_answer_sympy_confirms(tmp_path):
    """The command line itself (one subprocess); every record of its file is re-checked with sympy."""
    path = tmp_path / "math.jsonl"
    done = subprocess.run([sys.executable, str(SCRIPT), "--n", "400", "--seed", "7", "--output", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert "wrote 400 records" in done.stdout
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 400
    assert {(r["meta"]["kind"], r["meta"]["style"]) for r in records} == {(k, s) for k in KINDS for s in STYLES}
    for record in records:
        check_record(record)

    # same seed -> the same bytes; another seed -> another file (main() in-process: no second interpreter)
    again, other = tmp_path / "again.jsonl", tmp_path / "other.jsonl"
    script = load_script()
    assert script.main(["--n", "400", "--seed", "7", "--output", str(again)]) == 0
    assert script.main(["--n", "400", "--seed", "8", "--output", str(other)]) == 0
    assert again.read_bytes() == path.read_bytes()
    assert other.read_bytes() != path.read_bytes()

    # --no-meta: the same records as plain Dolly rows (instruction, context, response, category)
    plain = tmp_path / "plain.jsonl"
    assert script.main(["--n", "400", "--seed", "7", "--no-meta", "--output", str(plain)]) == 0
    rows = [json.loads(line) for line in plain.read_text(encoding="utf-8").splitlines()]
    assert rows == [{k: v for k, v in r.items() if k != "meta"} for r in records]


def test_script_rejects_bad_arguments_and_keeps_the_old_file(tmp_path, capsys):
    script = load_script()
    out = tmp_path / "math.jsonl"
    out.write_text("precious\n")
    for argv, message in ((["--n", "0"], "--n must be a positive integer"),
                          (["--n", "5", "--kinds", "algebra"], "unknown kind(s) algebra")):
        with pytest.raises(SystemExit) as exit_info:
            script.main(argv + ["--output", str(out)])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert out.read_text() == "precious\n"

    def failing():  # a crash mid-write leaves the previous file and no temp file behind
        yield {"ok": 1}
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl(str(out), failing())
    assert out.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["math.jsonl"]


def test_kinds_can_be_chosen(tmp_path):
    records = list(generate_records(40, seed=1, kinds=("power",)))
    assert {r["meta"]["kind"] for r in records} == {"power"}
    with pytest.raises(ValueError, match="unknown problem kinds"):
        list(generate_records(1, seed=1, kinds=("calculus",)))
