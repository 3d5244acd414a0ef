"""The OpenAI-compatible API driven by the official `openai` package against a real `contrail serve`."""
import json
import subprocess
import urllib.error
import urllib.request

import openai
import pytest

from conftest import ServerProcess

MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def api():
    s = ServerProcess(extra=["--batch-size", "8", "--max-cache-length", "256"], test_services=False)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{s.http_port}/v1", api_key="unused", max_retries=0, timeout=120)
    yield client
    client.close()
    assert s.stop() == 0, s.output()


def test_models(api):
    models = api.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_chat_greedy(api):
    r = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0)
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content == ANSWER and c.finish_reason == "stop"
    # The ChatML prompt with SmolLM2's default system message is 37 tokens; the answer 7 plus <|im_end|>.
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (37, 8, 45)


def test_chat_stream_with_usage(api):
    chunks = list(api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_completions_length_and_n(api):
    r = api.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, n=2)
    assert r.object == "text_completion"
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text == r.choices[1].text and r.choices[0].text.startswith(" Paris")
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 12


def test_completions_prompt_list_and_stream(api):
    r = api.completions.create(model=MODEL, prompt=["The capital of France is", "One, two,"], max_tokens=4, temperature=0)
    assert len(r.choices) == 2
    streamed = list(api.completions.create(model=MODEL, prompt="One, two,", max_tokens=4, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == r.choices[1].text
    assert streamed[-1].choices[0].finish_reason == "length"


def test_seed_reproduces_sampling(api):
    def draw(seed):
        r = api.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=24, temperature=1.0, seed=seed, n=2)
        return [c.text for c in r.choices]
    a, b, c = draw(11), draw(11), draw(12)
    assert a == b
    assert a != c
    assert a[0] != a[1], "the choices of one request draw differently"


def test_stop_strings(api):
    for stop, text in [(["France is"], "The capital of "), ("Par", "The capital of France is "), (["The"], "")]:
        r = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, stop=stop)
        assert r.choices[0].message.content == text and r.choices[0].finish_reason == "stop"


def test_penalties_change_the_answer(api):
    plain = api.completions.create(model=MODEL, prompt="1, 1, 1, 1,", max_tokens=8, temperature=0).choices[0].text
    penalised = api.completions.create(model=MODEL, prompt="1, 1, 1, 1,", max_tokens=8, temperature=0,
                                       extra_body={"repetition_penalty": 1.5}).choices[0].text
    assert plain != penalised


def test_ignore_eos_generates_max_tokens(api):
    # The greedy answer ends with <|im_end|> after 8 tokens; ignore_eos (vLLM/llama.cpp) runs to max_tokens.
    r = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=20,
                                    extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 20
    assert r.choices[0].message.content.startswith(ANSWER)
    # Stop strings still end it.
    r = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=20, stop="Paris",
                                    extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == "The capital of France is "


@pytest.mark.parametrize("kwargs, error, param", [
    ({"extra_body": {"ignore_eos": "yes"}}, openai.BadRequestError, "ignore_eos"),
    ({"temperature": 5}, openai.BadRequestError, "temperature"),
    ({"n": 0}, openai.BadRequestError, "n"),
    ({"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
    ({"stop": 3}, openai.BadRequestError, "stop"),
    ({"model": "gpt-4"}, openai.NotFoundError, "model"),
])
def test_bad_requests_get_openai_errors(api, kwargs, error, param):
    args = {"model": MODEL, "messages": QUESTION, **kwargs}
    with pytest.raises(error) as e:
        api.chat.completions.create(**args)
    body = e.value.body
    assert body["param"] == param and body["type"] == "invalid_request_error" and body["message"]


def test_malformed_json_and_messages(api):
    s = api.base_url
    out = subprocess.run(["curl", "-s", "-w", "%{http_code}", f"{s}chat/completions", "-d", "{nope"], capture_output=True, text=True)
    body, status = out.stdout[:-3], out.stdout[-3:]
    assert status == "400" and json.loads(body)["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "hi"}])


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_tokenize_and_detokenize_helpers(api):
    base = str(api.base_url).removesuffix("/v1/")

    def cli(*args):
        out = subprocess.run([ServerProcess.bin(), "tokenize", *args], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    status, r = post_json(f"{base}/tokenize", {"model": MODEL, "prompt": "What is the capital of France?"})
    assert status == 200
    assert r["tokens"] == cli("What is the capital of France?") and r["count"] == len(r["tokens"]) and r["max_model_len"] == 256
    assert post_json(f"{base}/tokenize", {"messages": QUESTION})[1]["tokens"] == cli("--chat", "What is the capital of France?")
    assert post_json(f"{base}/detokenize", {"tokens": r["tokens"]}) == (200, {"prompt": "What is the capital of France?"})
    status, bad = post_json(f"{base}/detokenize", {"tokens": [1, 10**9]})
    assert status == 400 and bad["error"]["param"] == "tokens"
    assert post_json(f"{base}/tokenize", {"nothing": 1})[0] == 400


def test_completion_logprobs(api):
    import math
    r = api.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == r.usage.completion_tokens == 5
    for chosen, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and logprob <= 0
        # Greedy: the chosen token is the most likely one, and the alternatives are a distribution's tail.
        assert max(top.values()) == pytest.approx(logprob) and top[chosen] == pytest.approx(logprob)
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-4
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_chat_logprobs_streamed_and_not(api):
    r = api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == ANSWER
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob == pytest.approx(t.logprob) for t in content)
    assert all(bytes(t.bytes).decode() == t.token for t in content)
    chunks = list(api.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, logprobs=True, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in content]
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=MODEL, messages=QUESTION, top_logprobs=2)
