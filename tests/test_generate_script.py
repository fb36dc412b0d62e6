"""scripts/generate.py and pygpt_hf.streaming on a tiny random model saved to a temp folder.

The streamed decode loop must give `model.generate`'s greedy tokens exactly, sample repeatably from a
seed, and print only complete UTF-8 characters; the script must stream for --prompt, --instruction and
stdin lines (Ctrl-D ends it), in Flax and in PyTorch, and refuse impossible requests plainly.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_script, save_tiny_model

from pygpt_hf.streaming import (
    FlaxTokenStreamer,
    IncrementalDetokenizer,
    check_fits,
    encode_prompt,
    sample_token,
    stream_text,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "generate.py"
N_POSITIONS = 48
TEXTS = ["the cat sat on the mat", "héllo wörld, naïve café", "日本語のテキスト", "emoji 🙂 and 🚀 too",
         "### Instruction:\nSay hi.\n\n### Response:\nhi"] * 4


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder, model, tokenizer): a tiny random model and its tokenizer, saved as one model folder."""
    folder = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = save_tiny_model(folder, TEXTS, N_POSITIONS)
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def greedy(saved):
    _, model, _ = saved
    return FlaxTokenStreamer(model, temperature=0)


SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 0.95}  # the script's flags below say the same


@pytest.fixture(scope="module")
def sampler(saved):
    _, model, _ = saved
    return FlaxTokenStreamer(model, **SAMPLING)


PROMPT, NEW_TOKENS = "the cat", 16  # one prompt shape throughout: each streamer compiles once


@pytest.fixture(scope="module")
def script_runs(saved, tmp_path_factory):
    """The script as a user runs it, in two subprocesses started together (each pays a jax import):
    --prompt with greedy decoding, and the interactive loop sampling from stdin lines then end of input."""
    folder = str(saved[0])
    common = [sys.executable, str(SCRIPT), "--model", folder, "--max-new-tokens", str(NEW_TOKENS)]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    prompt = subprocess.Popen(common + ["--prompt", PROMPT, "--temperature", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    lines = tmp_path_factory.mktemp("stdin") / "lines.txt"
    lines.write_text(f"{PROMPT}\n{PROMPT}\n")  # two lines, then end of input, as Ctrl-D gives
    with open(lines) as stdin:
        interactive = subprocess.Popen(
            common + ["--temperature", "1.0", "--top-k", "0", "--top-p", "0.95", "--seed", "5"], stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    yield prompt, interactive
    for process in (prompt, interactive):
        if process.poll() is None:
            process.kill()


def finished(process):
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def generate_greedy(model, ids, max_new_tokens, eos_token_id):
    out = model.generate(np.asarray([ids], np.int32), max_length=len(ids) + max_new_tokens, do_sample=False,
                         eos_token_id=eos_token_id, pad_token_id=257)
    return np.asarray(out.sequences[0, len(ids):]).tolist()


def expected_text(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=True)


# ---- the decode loop ---------------------------------------------------------------------------------


def test_streamed_greedy_tokens_are_generates_tokens(saved, greedy, script_runs):
    # (script_runs is asked for here only to start the script's subprocesses early, to run alongside)
    _, model, tokenizer = saved
    ids = encode_prompt(tokenizer, PROMPT)
    assert ids[0] == tokenizer.bos_token_id == 256
    streamed = list(greedy.stream(ids, NEW_TOKENS, eos_token_id=None))
    # generate needs some eos (hf-stack trap 3): <|pad|>, which this prompt never produces (the length shows it)
    reference = generate_greedy(model, ids, NEW_TOKENS, eos_token_id=257)
    assert len(streamed) == NEW_TOKENS and streamed == reference

    # Stopping: with the 6th generated token declared the eos, the stream ends right after its first
    # occurrence (where `generate` stops too, padding the rest).
    stop = reference[5]
    k = reference.index(stop)
    assert list(greedy.stream(ids, NEW_TOKENS, eos_token_id=stop)) == reference[: k + 1]


def test_sampling_is_repeatable_from_a_seed(saved, sampler):
    _, _, tokenizer = saved
    ids = encode_prompt(tokenizer, PROMPT)
    first = list(sampler.stream(ids, NEW_TOKENS, seed=3))
    assert list(sampler.stream(ids, NEW_TOKENS, seed=3)) == first
    assert list(sampler.stream(ids, NEW_TOKENS, seed=4)) != first


def test_sample_token_filters():
    logits = jnp.asarray([[0.1, 2.0, 1.5, -1.0, 1.9, 0.0]])
    probs = np.asarray(jax.nn.softmax(logits[0]))
    assert probs[1] + probs[4] < 0.7 < probs[1] + probs[4] + probs[2]
    settings = [{}, {"top_k": 3}, {"top_k": 1}, {"top_p": 0.7}, {"top_p": 1e-6}]

    @jax.jit
    def draws(keys):  # 400 draws under each setting, compiled as one program
        return [jax.vmap(lambda key, kw=kw: sample_token(logits, key, temperature=1.0, **kw)[0])(keys)
                for kw in settings]

    drawn = [set(np.asarray(d).tolist()) for d in draws(jax.random.split(jax.random.PRNGKey(0), 400))]
    assert drawn == [
        {0, 1, 2, 3, 4, 5},  # plain sampling reaches every token
        {1, 2, 4},           # top-k 3: the three most likely
        {1},                 # top-k 1 is greedy
        {1, 2, 4},           # top-p 0.7: the smallest set of most likely tokens with mass >= 0.7
        {1},                 # a tiny top-p keeps the most likely token alone
    ]
    assert int(sample_token(logits, jax.random.PRNGKey(0), temperature=0)[0]) == 1  # temperature 0: argmax


def test_detokenizer_prints_only_complete_characters(saved):
    _, _, tokenizer = saved
    text = "héllo 日本 🙂!"
    byte_ids = list(text.encode("utf-8"))  # ids 0..255 are the single bytes
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push(i) for i in byte_ids] + [detokenizer.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)
    assert pieces[1] == "" and pieces[2] == "é"  # é is two bytes: nothing until the second arrives
    emoji_start = len("héllo 日本 ".encode())
    assert pieces[emoji_start: emoji_start + 3] == ["", "", ""] and pieces[emoji_start + 3] == "🙂"
    # Special tokens are not shown; an invalid byte left at the end still comes out (as decode shows it).
    assert "".join(stream_text(iter([104, 105, 256, 0xE6]), tokenizer)) == "hi\ufffd"


def test_detokenizer_text_is_decode_for_fast_and_slow_tokenizers(saved):
    """The fast tokenizer's pieces come from its Rust decoder directly (a server's hot path); for either class,
    the pieces of any id sequence (special tokens, split characters, merged tokens) join to exactly what
    `decode(skip_special_tokens=True)` gives, and the two classes agree."""
    from pygpt_hf import PyGPTTokenizer, PyGPTTokenizerFast

    folder, _, _ = saved
    rng = np.random.default_rng(0)
    fast, slow = PyGPTTokenizerFast.from_pretrained(folder), PyGPTTokenizer.from_pretrained(folder)
    for _ in range(20):
        ids = rng.integers(0, len(fast), int(rng.integers(1, 30))).tolist()
        texts = []
        for tokenizer in (fast, slow):
            detokenizer = IncrementalDetokenizer(tokenizer)
            text = "".join(detokenizer.push(i) for i in ids) + detokenizer.flush()
            assert text == tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            texts.append(text)
        assert texts[0] == texts[1]


def test_requests_beyond_the_context_are_refused(saved, greedy):
    with pytest.raises(ValueError, match=r"more than the model's context \(n_positions = 48\)"):
        check_fits(40, 9, 48)
    check_fits(40, 8, 48)
    _, _, tokenizer = saved
    ids = encode_prompt(tokenizer, PROMPT)
    with pytest.raises(ValueError, match=rf"ask for at most {N_POSITIONS - len(ids)} new tokens"):
        greedy.stream(ids, N_POSITIONS - len(ids) + 1)  # refused at the call, before anything runs
    with pytest.raises(ValueError, match="the prompt is empty"):
        greedy.stream([], 4)


# ---- the script ----------------------------------------------------------------------------------------


def test_script_streams_a_prompt(saved, greedy, script_runs):
    _, _, tokenizer = saved
    ids = encode_prompt(tokenizer, PROMPT)
    expected = expected_text(tokenizer, list(greedy.stream(ids, NEW_TOKENS, eos_token_id=tokenizer.eos_token_id)))
    returncode, out, err = finished(script_runs[0])
    assert returncode == 0, err
    assert out == expected + "\n"  # stdout holds the generated text and nothing else
    assert "tokens in" in err


def test_script_interactive_reads_lines_until_end_of_input(saved, sampler, script_runs):
    """Line i samples with --seed + i: the two identical lines get different, reproducible answers."""
    _, _, tokenizer = saved
    ids = encode_prompt(tokenizer, PROMPT)
    answers = [expected_text(tokenizer, list(sampler.stream(ids, NEW_TOKENS, seed=seed,
                                                            eos_token_id=tokenizer.eos_token_id)))
               for seed in (5, 6)]
    assert answers[0] != answers[1]
    returncode, out, err = finished(script_runs[1])
    assert returncode == 0, err  # end of input ends the loop cleanly
    assert out == answers[0] + "\n" + answers[1] + "\n"
    assert "Ctrl-D quits" in err and err.count("tokens in") == 2


def test_script_instruction_through_the_training_template(saved, greedy, capsys, monkeypatch):
    from pygpt_hf.documents import render_instruction

    folder, model, tokenizer = saved
    script = load_script("generate")
    # In-process, with the fixture's model in place of a second load (the subprocesses above load for real).
    real_load = script.load_model
    monkeypatch.setattr(script, "load_model", lambda args: model if args.framework == "flax" else real_load(args))
    prompt = render_instruction("Say hi.", "", "to a friend")
    assert script.instruction_text("Say hi.", "to a friend") == prompt and prompt.endswith("### Response:\n")
    ids = encode_prompt(tokenizer, prompt)
    expected = expected_text(tokenizer, list(greedy.stream(ids, 10, eos_token_id=tokenizer.eos_token_id)))
    args = ["--model", str(folder), "--instruction", "Say hi.", "--context", "to a friend", "--max-new-tokens", "10",
            "--temperature", "0"]
    assert script.main(args) == 0
    assert capsys.readouterr().out == expected + "\n"

    # The PyTorch twin on the same folder streams through TextStreamer and agrees with Flax.
    pytest.importorskip("torch")
    pytest.importorskip("pygpt_hf.modeling_pygpt")
    assert script.main(args + ["--framework", "torch"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_script_errors_are_clear(saved, tmp_path, capsys):
    folder, _, _ = saved
    script = load_script("generate")

    def error_of(*args) -> str:
        assert script.main(list(args)) == 1
        return capsys.readouterr().err

    assert "no such model folder" in error_of("--model", str(tmp_path / "nowhere"), "--prompt", "x")
    (tmp_path / "empty").mkdir()
    assert "has no config.json" in error_of("--model", str(tmp_path / "empty"), "--prompt", "x")
    err = error_of("--model", str(folder), "--prompt", "x", "--max-new-tokens", "48")
    assert "--max-new-tokens 48 leaves no room" in err and "n_positions = 48" in err
    err = error_of("--model", str(folder), "--prompt", "the cat " * 20, "--max-new-tokens", "20")
    assert "more than the model's context (n_positions = 48)" in err
    with pytest.raises(SystemExit):
        script.main(["--model", str(folder), "--context", "c"])
    assert "--context needs --instruction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--model", str(folder), "--prompt", "a", "--instruction", "b"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_script_loads_a_hub_repo_id(saved, greedy, hub, capsys):
    """--model may be a Hub repo id (here on the loopback Hub): config, tokenizer and weights download.
    PyTorch loads fastest, so it reads the weights here; its greedy text is Flax's."""
    pytest.importorskip("torch")
    pytest.importorskip("pygpt_hf.modeling_pygpt")
    folder, _, tokenizer = saved
    api = hub.api()
    repo_id = hub.repo_id("generate")
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    expected = expected_text(tokenizer, list(greedy.stream(encode_prompt(tokenizer, PROMPT), NEW_TOKENS,
                                                           eos_token_id=tokenizer.eos_token_id)))
    script = load_script("generate")
    assert script.main(["--model", repo_id, "--prompt", PROMPT, "--max-new-tokens", str(NEW_TOKENS),
                        "--temperature", "0", "--framework", "torch"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert script.main(["--model", hub.repo_id("missing"), "--prompt", PROMPT]) == 1
    assert "cannot read the model's config from this Hub repo" in capsys.readouterr().err
