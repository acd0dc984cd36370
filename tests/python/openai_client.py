"""The openai Python SDK against an Airlock HTTP route: one plain and one streaming chat
completion, printed as one JSON object. Usage: openai_client.py BASE_URL API_KEY MODEL [PROMPT]"""
import json
import sys

from openai import OpenAI

base_url, api_key, model = sys.argv[1:4]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=15)
prompt = sys.argv[4] if len(sys.argv) > 4 else "summarize the chart"
messages = [{"role": "user", "content": prompt}]

plain = client.chat.completions.create(model=model, messages=messages)
streamed = []
for event in client.chat.completions.create(model=model, messages=messages, stream=True):
    if event.choices and event.choices[0].delta.content:
        streamed.append(event.choices[0].delta.content)
models = [m.id for m in client.models.list()]

try:
    OpenAI(base_url=base_url, api_key="ak_not_a_real_key", max_retries=0, timeout=15).models.list()
    refused = None
except Exception as e:  # the SDK raises AuthenticationError for a 401
    refused = {"type": type(e).__name__, "status": getattr(e, "status_code", None)}

print(json.dumps({
    "plain": plain.choices[0].message.content,
    "finish_reason": plain.choices[0].finish_reason,
    "streamed": "".join(streamed),
    "chunks": len(streamed),
    "models": models,
    "refused": refused,
}))
