"""The chat page in a real browser: Playwright drives Debian's Chromium against the real server.

The server's app runs in this process (uvicorn in a thread, a free loopback port) on a tiny random model saved
to a temp folder, serving the built page (`web/out`, built once with npm when missing or stale) at / beside the
API, exactly as `scripts/serve.py` does. The model's <|endoftext|> embedding is zeroed, so its logit is 0 and a
greedy answer never ends early: answers run to max tokens, long enough to press Stop in the middle of one.
Every answer the page shows is checked against the API's own greedy answer to the same prompt.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium to drive: install Debian's `chromium` package (.ci/run does, with apt)")

sync_api = pytest.importorskip("playwright.sync_api", reason="the `dev` extra's playwright drives the browser")
uvicorn = pytest.importorskip("uvicorn", reason="the server needs the `serve` extra")
expect = sync_api.expect

from pygpt_hf import FlaxPyGPTForCausalLM, PyGPTConfig
from pygpt_hf.bpe import train_tokenizer
from pygpt_hf.serving.app import Served, create_app
from pygpt_hf.serving.loading import load_served
from pygpt_hf.serving.page import is_stale, page_folder
from pygpt_hf.documents import CHAT_TEMPLATE

WEB = Path(__file__).resolve().parents[1] / "web"
N_POSITIONS = 256
TEXTS = ["the cat sat on the mat", "a story about a dog", "### Instruction:\nSay hi.\n\n### Response:\nhi"] * 4
# The page's default sampling fields; with temperature 0 the answer is greedy whatever they are.
SAMPLING = {"temperature": 0, "top_k": 50, "top_p": 0.95}
PHONE = {"width": 390, "height": 780}
LONG = 120  # max tokens of the answer that is stopped half-way


class Server:
    """uvicorn serving `app` on a free loopback port, in a thread."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def post(self, path: str, body: dict) -> dict:
        response = httpx.post(self.url + path, json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    def chat_answer(self, model: str, messages: list[dict], max_tokens: int) -> str:
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, **SAMPLING}
        return self.post("/v1/chat/completions", body)["choices"][0]["message"]["content"]

    def count(self, model: str, messages: list[dict]) -> int:
        return self.post("/tokenize", {"model": model, "messages": messages})["count"]

    def fit(self, model: str, messages: list[dict], max_tokens: int) -> tuple[int, list[dict]]:
        """What the page must send: the oldest (user, answer) pairs dropped until prompt + max_tokens fits."""
        dropped = 0
        while self.count(model, messages[dropped:]) + max_tokens > N_POSITIONS:
            dropped += 2
        return dropped, messages[dropped:]


@pytest.fixture(scope="module")
def page_dir():
    if is_stale(WEB) and shutil.which("npm") is None:
        pytest.skip("web/out is missing or older than web/'s sources and npm is missing: cd web && npm ci && npm run build")
    folder = page_folder(WEB, log=print)
    assert folder is not None, "the chat page could not be built: cd web && npm ci && npm run build"
    return folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-chat")
    tokenizer = train_tokenizer(TEXTS, vocab_size=300, model_max_length=N_POSITIONS, show_progress=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = PyGPTConfig(vocab_size=len(tokenizer), n_positions=N_POSITIONS, n_embd=32, n_layer=2, n_head=2)
    model = FlaxPyGPTForCausalLM(config, seed=0)
    params = model.params
    wte = params["transformer"]["wte"]["embedding"]
    params["transformer"]["wte"]["embedding"] = wte.at[tokenizer.eos_token_id].set(0.0)  # tied: eos logit is 0
    model.save_pretrained(folder, params=params)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def servers(model_folder, page_dir):
    """(chat, plain): the model with its chat template, and the same engine behind a tokenizer without one."""
    from transformers import AutoTokenizer

    served = load_served(str(model_folder), served_model_name="tiny-chat", slots=2)
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    tokenizer.chat_template = None
    chat = Server(create_app(served, static_dir=page_dir))
    plain = Server(create_app(Served("tiny-plain", tokenizer, served.engine, served.n_positions), static_dir=page_dir))
    yield chat, plain
    chat.stop()
    plain.stop()
    served.engine.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800})  # fresh localStorage per test
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


def open_chat(page, url: str, model: str):
    page.goto(url + "/")
    expect(page.get_by_test_id("model-name")).to_have_text(model)


def set_sampling(page, temperature: float | None = None, max_tokens: int | None = None):
    if page.get_by_role("region", name="Settings").count() == 0:
        page.get_by_role("button", name="Settings").click()
    if temperature is not None:
        page.get_by_label("Temperature").fill(str(temperature))
    if max_tokens is not None:
        page.get_by_label("Max tokens").fill(str(max_tokens))


def send(page, text: str):
    page.get_by_test_id("message-input").fill(text)
    page.get_by_test_id("message-input").press("Enter")


def answer_when_done(page, index: int = -1) -> str:
    """The text of an answer once it has finished streaming (Regenerate shows only then)."""
    expect(page.get_by_test_id("regenerate")).to_be_visible(timeout=180_000)
    answers = page.get_by_test_id("assistant-message")
    return answers.nth(index if index >= 0 else answers.count() + index).text_content()


def test_type_stream_stop_regenerate(servers, page, tmp_path):
    chat, _ = servers
    open_chat(page, chat.url, "tiny-chat")
    set_sampling(page, temperature=0, max_tokens=12)

    # Shift+Enter is a new line, Enter sends.
    box = page.get_by_test_id("message-input")
    box.fill("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    expect(box).to_have_value("line one\nline two")
    expect(page.get_by_test_id("user-message")).to_have_count(0)
    box.press("Enter")
    expect(page.get_by_test_id("user-message")).to_have_text("line one\nline two")
    expect(box).to_have_value("")
    first = answer_when_done(page)
    turn1 = [{"role": "user", "content": "line one\nline two"}]
    assert first == chat.chat_answer("tiny-chat", turn1, 12)
    expect(page.get_by_test_id("answer-stats")).to_have_text(re.compile(r"^12 tokens · \d+\.\d tok/s$"))  # usage
    expect(page.get_by_test_id("tokens-per-second")).to_have_text(re.compile(r"^\d+\.\d tok/s$"))

    # A long answer streams in (text shows while Stop is still there) and stops when asked.
    aborted = []
    page.on("requestfailed", lambda r: aborted.append(r.failure) if r.url.endswith("/v1/chat/completions") else None)
    set_sampling(page, max_tokens=LONG)
    # The browser receives the stream slowly (DevTools network throttling), so Stop comes in the middle of
    # the answer however fast the server is.
    network = page.context.new_cdp_session(page)
    network.send("Network.enable")
    throttle = {"offline": False, "latency": 0, "uploadThroughput": -1}
    network.send("Network.emulateNetworkConditions", {**throttle, "downloadThroughput": 3000})
    send(page, "tell me a long story")
    streaming = page.get_by_test_id("assistant-message").nth(1)
    expect(streaming).to_have_text(re.compile(r"\S"), timeout=60_000)
    expect(page.get_by_test_id("stop")).to_be_visible()
    page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("send")).to_be_visible()
    expect(page.get_by_text("stopped", exact=True)).to_be_visible()
    stopped = streaming.text_content()
    page.wait_for_timeout(300)
    assert streaming.text_content() == stopped, "text kept arriving after Stop"
    assert aborted and "ABORTED" in aborted[0].upper(), f"Stop did not close the request: {aborted}"
    expect(page.get_by_test_id("answer-stats").nth(1)).to_have_text(re.compile(r"^≈\d+ tokens?\b"))  # no usage
    page.screenshot(path=tmp_path / "stopped.png")
    network.send("Network.emulateNetworkConditions", {**throttle, "downloadThroughput": -1})

    # Regenerate answers the same prompt again: greedy, so the stopped text is a strict prefix of the full one.
    page.get_by_test_id("regenerate").click()
    full = answer_when_done(page, 1)
    turn2 = turn1 + [{"role": "assistant", "content": first}, {"role": "user", "content": "tell me a long story"}]
    assert full == chat.chat_answer("tiny-chat", turn2, LONG)
    assert full.startswith(stopped) and len(full) > len(stopped)
    expect(page.get_by_test_id("assistant-message")).to_have_count(2)
    at_bottom = "(() => { const el = document.querySelector('[role=log]').parentElement;" \
                " return el.scrollHeight - el.scrollTop - el.clientHeight < 40; })()"
    assert page.evaluate(at_bottom), "the view did not follow the answer down"
    page.screenshot(path=tmp_path / "chat.png")

    # Phone width: nothing wider than the screen, the controls still there.
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    for testid in ("message-input", "send", "new-chat", "regenerate"):
        expect(page.get_by_test_id(testid)).to_be_visible()
    page.screenshot(path=tmp_path / "phone.png")
    assert (tmp_path / "chat.png").stat().st_size > 0 and (tmp_path / "phone.png").stat().st_size > 0


def test_drops_oldest_turns_edits_and_keeps_conversations(servers, page):
    chat, _ = servers
    open_chat(page, chat.url, "tiny-chat")
    set_sampling(page, temperature=0, max_tokens=8)
    long_question = "a story about a dog and the cat that sat on the mat, " * 7
    send(page, long_question)
    first = answer_when_done(page)

    # Max tokens so large that the whole conversation cannot fit, but the last message alone can.
    last = [{"role": "user", "content": "and then?"}]
    both = [{"role": "user", "content": long_question}, {"role": "assistant", "content": first}] + last
    max_tokens = N_POSITIONS - chat.count("tiny-chat", both) + 1
    assert chat.count("tiny-chat", last) + max_tokens <= N_POSITIONS
    set_sampling(page, max_tokens=max_tokens)
    send(page, "and then?")
    second = answer_when_done(page, 1)
    expect(page.get_by_test_id("context-note")).to_have_text(re.compile(r"2 earlier messages were left out"))
    assert second == chat.chat_answer("tiny-chat", last, max_tokens)

    # Edit the last question and send it again: what came after it is replaced.
    page.get_by_test_id("edit-message").nth(1).click()
    page.get_by_test_id("edit-input").fill("and after that?")
    page.get_by_test_id("edit-input").press("Enter")
    expect(page.get_by_test_id("user-message")).to_have_text([long_question, "and after that?"])
    edited = answer_when_done(page, 1)
    expect(page.get_by_test_id("assistant-message")).to_have_count(2)
    assert edited == chat.chat_answer("tiny-chat", [{"role": "user", "content": "and after that?"}], max_tokens)

    # A message that cannot fit even alone is not sent: the answer says why, with the numbers.
    set_sampling(page, max_tokens=N_POSITIONS - 1)
    send(page, "one more")
    expect(page.get_by_test_id("answer-error")).to_contain_text(f"up to {N_POSITIONS - 1} more")
    expect(page.get_by_test_id("answer-error")).to_contain_text(f"holds {N_POSITIONS}")
    expect(page.get_by_test_id("send")).to_be_visible()
    page.get_by_test_id("edit-message").nth(2).click()  # edit it into the failed one's place: no error left
    page.get_by_test_id("edit-input").fill("and after that?")
    set_sampling(page, max_tokens=max_tokens)
    page.get_by_test_id("edit-send").click()
    expect(page.get_by_test_id("user-message")).to_have_text([long_question, "and after that?", "and after that?"])
    expect(page.get_by_test_id("answer-error")).to_have_count(0)
    again = answer_when_done(page, 2)
    conversation = [{"role": "user", "content": long_question}, {"role": "assistant", "content": first},
                    {"role": "user", "content": "and after that?"}, {"role": "assistant", "content": edited},
                    {"role": "user", "content": "and after that?"}]
    dropped, sent = chat.fit("tiny-chat", conversation, max_tokens)
    assert dropped > 0
    expect(page.get_by_test_id("context-note").last).to_have_text(re.compile(f"^{dropped} earlier messages were"))
    assert again == chat.chat_answer("tiny-chat", sent, max_tokens)

    # Conversations live in localStorage: a reload keeps them; New chat starts an empty one beside it.
    page.reload()
    expect(page.get_by_test_id("user-message")).to_have_text([long_question, "and after that?", "and after that?"])
    expect(page.get_by_test_id("assistant-message").nth(2)).to_have_text(again)
    page.get_by_test_id("new-chat").click()
    expect(page.get_by_test_id("user-message")).to_have_count(0)
    expect(page.get_by_test_id("message-input")).to_be_focused()
    expect(page.get_by_test_id("conversation")).to_have_count(2)
    page.get_by_test_id("conversation").nth(1).click()
    expect(page.get_by_test_id("user-message")).to_have_count(3)


def test_plain_completion_for_a_model_without_chat_template(servers, page):
    _, plain = servers
    open_chat(page, plain.url, "tiny-plain")
    set_sampling(page, temperature=0, max_tokens=10)
    expect(page.get_by_test_id("mode")).to_have_value("completion")
    expect(page.get_by_test_id("mode").locator("option[value=chat]")).to_be_disabled()

    # Keyboard only: type, Tab to Send, press it.
    page.get_by_test_id("message-input").focus()
    page.keyboard.type("the cat sat")
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("send")).to_be_focused()
    page.keyboard.press("Enter")
    answer = answer_when_done(page)
    body = {"model": "tiny-plain", "prompt": "the cat sat", "max_tokens": 10, **SAMPLING}
    assert answer == plain.post("/v1/completions", body)["choices"][0]["text"]
