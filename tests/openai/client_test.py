"""The official `openai` Python client against `emesh up`: usage: client_test.py ADDR API_KEY.

The weights are random, so the checks are about the protocol: the client accepts every answer
and stream we send, reasoning arrives apart from content, and a tool-call round trip is encoded
the way the V4 format wants it.
"""

import json
import sys
import urllib.request

import openai
from openai import OpenAI

addr, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"http://{addr}/v1", api_key=key, max_retries=0, timeout=120)

# A wrong key is refused with the client's own error type.
try:
    OpenAI(base_url=f"http://{addr}/v1", api_key="wrong", max_retries=0).models.list()
    raise SystemExit("a wrong API key was accepted")
except openai.AuthenticationError:
    pass

model = client.models.list().data[0].id

# Chat, not streaming.
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, temperature=0
)
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant"
assert r.usage.completion_tokens == 8, r.usage
assert r.choices[0].finish_reason in ("length", "stop", "tool_calls")

# Streaming chat in thinking mode: reasoning deltas apart from content, usage at the end.
reasoning, content, usage, finish = "", "", None, None
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Think, then answer: 2+2?"}],
    max_tokens=10,
    temperature=0.6,
    seed=11,
    stream=True,
    stream_options={"include_usage": True},
    extra_body={"chat_template_kwargs": {"thinking": True}},
)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        extra = c.delta.model_extra or {}
        reasoning += extra.get("reasoning_content") or ""
        content += c.delta.content or ""
        finish = c.finish_reason or finish
assert reasoning, "thinking mode streams reasoning_content"
assert usage is not None and usage.completion_tokens == 10, usage
assert finish in ("length", "stop", "tool_calls"), finish

# Same seed, same answer.
def seeded():
    return client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=5, temperature=0.9, seed=3, logprobs=2
    )

a, b = seeded(), seeded()
assert a.choices[0].text == b.choices[0].text
lp = a.choices[0].logprobs
assert len(lp.token_logprobs) == 5 and all(x <= 0 for x in lp.token_logprobs), lp

# Streaming completions.
text = "".join(
    c.choices[0].text
    for c in client.completions.create(model=model, prompt="Once", max_tokens=4, temperature=0, stream=True)
    if c.choices
)
assert isinstance(text, str)

# A tool-call round trip: the assistant's call and the tool's result go back to the server.
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
messages = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
]
r = client.chat.completions.create(model=model, messages=messages, tools=tools, max_tokens=6, temperature=0)
assert r.choices[0].message.role == "assistant"
for call in r.choices[0].message.tool_calls or []:
    json.loads(call.function.arguments)
# The server rendered the call and its result in the V4 format (DSML), the arguments intact.
req = urllib.request.Request(
    f"http://{addr}/tokenize",
    data=json.dumps({"messages": messages, "tools": tools}).encode(),
    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
)
ids = json.load(urllib.request.urlopen(req))["tokens"]
req = urllib.request.Request(
    f"http://{addr}/detokenize",
    data=json.dumps({"tokens": ids}).encode(),
    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
)
prompt = json.load(urllib.request.urlopen(req))["prompt"]
assert 'invoke name="get_weather"' in prompt, prompt
assert "Paris" in prompt and "sunny, 21C" in prompt and "get_weather" in prompt, prompt

# Bad input comes back as the client's error types.
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], temperature=-1)
    raise SystemExit("temperature -1 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400
try:
    client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("an unknown model was accepted")
except openai.NotFoundError:
    pass

print("openai client: all checks passed")
