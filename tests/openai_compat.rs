//! The OpenAI-compatible surface of a real node: `/v1/chat/completions` (JSON and SSE, the
//! stream's deltas concatenating to the JSON answer), `/v1/models`, the `model_not_found`
//! error, and the official Python SDKs against the node: `openai` (chat, streams with and
//! without `include_usage`, `models.list`/`retrieve`, `embeddings.create` — which asks for
//! base64 vectors by default) and `anthropic` (`messages.create` and
//! `messages.stream` on `/v1/messages`). `.ci/run` installs both; without one its test fails
//! under `CI=true` and is a loud skip elsewhere.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{assert_error, config, Node, Sim};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_json_and_stream_agree() {
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;
    let url = format!("{}/v1/chat/completions", node.url);
    let messages = json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Explain token budgets in one paragraph."}
    ]);

    let r = node
        .http
        .post(&url)
        .json(&json!({"model": "fast", "messages": messages}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!content.is_empty(), "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant", "{v}");
    let u = &v["usage"];
    let (pt, ct) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(pt > 0 && ct > 0, "{v}");
    assert_eq!(u["total_tokens"].as_u64(), Some(pt + ct), "{v}");

    let r = node
        .http
        .post(&url)
        .json(&json!({"model": "fast", "messages": messages, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct_header = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct_header.starts_with("text/event-stream"), "{ct_header}");
    let body = r.text().await.unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        data.last().copied(),
        Some("[DONE]"),
        "ends with [DONE]:\n{body}"
    );
    let mut streamed = String::new();
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap_or_else(|e| panic!("bad chunk {d}: {e}"));
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        if let Some(s) = chunk["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(s);
        }
    }
    assert!(data.len() > 2, "more than one chunk:\n{body}");
    assert_eq!(streamed, content, "stream and JSON answers differ");

    assert_error(
        "unknown model",
        {
            let r = node
                .http
                .post(&url)
                .json(&json!({"model": "gpt-9", "messages": messages}))
                .send()
                .await
                .unwrap();
            let st = r.status();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        },
        404,
        "model_not_found",
    );

    let (st, models) = node.get_json("/v1/models").await;
    assert_eq!(st, StatusCode::OK, "{models}");
    assert_eq!(models["object"], "list");
    let mut ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["fast", "smart"], "{models}");

    // Both calls went to the simulator, accounted in the audit log like task calls.
    let sim_calls = sim.calls(None).await;
    assert_eq!(
        sim_calls.iter().filter(|c| c["status"] == 200).count(),
        2,
        "{sim_calls:?}"
    );
}

const SDK_SCRIPT: &str = r#"
import json, os, openai
from openai import OpenAI
c = OpenAI(base_url=os.environ["NODE_BASE"], api_key="x", max_retries=0)
msgs = [{"role": "user", "content": "hello from the official SDK"}]
r = c.chat.completions.create(model="fast", messages=msgs)
parts = []
# Without include_usage every chunk has a choice: reading choices[0] never fails.
for ch in c.chat.completions.create(model="fast", messages=msgs, stream=True):
    if ch.choices[0].delta.content:
        parts.append(ch.choices[0].delta.content)
    assert ch.usage is None, ch
stream_usage = None
with_usage = list(c.chat.completions.create(
    model="fast", messages=msgs, stream=True, stream_options={"include_usage": True}))
last = with_usage[-1]
assert last.choices == [], last
stream_usage = last.usage.total_tokens
try:
    c.chat.completions.create(model="nope", messages=msgs)
    missing = None
except openai.NotFoundError as e:
    missing = e.status_code
m = c.models.retrieve("fast")
try:
    c.models.retrieve("nope")
    retrieve_missing = None
except openai.NotFoundError as e:
    retrieve_missing = e.status_code
print(json.dumps({
    "content": r.choices[0].message.content,
    "usage": r.usage.total_tokens,
    "streamed": "".join(parts),
    "stream_usage": stream_usage,
    "models": sorted(m.id for m in c.models.list()),
    "missing": missing,
    "retrieved": [m.id, m.object, m.owned_by],
    "retrieve_missing": retrieve_missing,
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_unchanged() {
    if !common::prereq::require(
        "the official OpenAI Python SDK",
        common::prereq::python(Some("openai")),
        "python3 -m pip install 'openai>=1.40'",
    ) {
        return;
    }
    let sim = Sim::start(&[]).await;
    let node = Node::start(&config(&sim, 2, json!({}))).await;
    let url = format!("{}/v1", node.url);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg("-c")
            .arg(SDK_SCRIPT)
            .env("NODE_BASE", url)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let content = v["content"].as_str().unwrap();
    assert!(!content.is_empty(), "{v}");
    assert_eq!(v["streamed"].as_str(), Some(content), "{v}");
    assert!(v["usage"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["models"], json!(["fast", "smart"]), "{v}");
    assert_eq!(v["missing"], 404, "{v}");
    assert!(v["stream_usage"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["retrieved"], json!(["fast", "model", "sim"]), "{v}");
    assert_eq!(v["retrieve_missing"], 404, "{v}");
}

const EMBEDDINGS_SCRIPT: &str = r#"
import json, math, os, openai
from openai import OpenAI
c = OpenAI(base_url=os.environ["NODE_BASE"], api_key="x", max_retries=0)
texts = ["How do I reset my password?", "How can I reset my password?",
         "The weather in Paris is sunny today"]
# The SDK asks for base64 unless told otherwise, and decodes it.
r = c.embeddings.create(model="emb", input=texts)
f = c.embeddings.create(model="emb", input=texts[0], encoding_format="float")
def cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
v = [d.embedding for d in r.data]
errors = {}
for name, kwargs in [("too_long", {"model": "emb", "input": ["ok", "word " * 300]}),
                     ("dimensions", {"model": "emb", "input": "x", "dimensions": 8}),
                     ("chat_model", {"model": "fast", "input": "x"})]:
    try:
        c.embeddings.create(**kwargs)
        errors[name] = None
    except openai.BadRequestError as e:
        errors[name] = [e.status_code, e.code]
print(json.dumps({
    "count": len(r.data),
    "indexes": [d.index for d in r.data],
    "dims": [len(x) for x in v],
    "near": cos(v[0], v[1]),
    "far": cos(v[0], v[2]),
    "same_as_float": max(abs(a - b) for a, b in zip(v[0], f.data[0].embedding)),
    "model": r.model,
    "usage": [r.usage.prompt_tokens, r.usage.total_tokens],
    "float_usage": f.usage.prompt_tokens,
    "errors": errors,
    "models": sorted(m.id for m in c.models.list()),
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_embeddings_work_unchanged() {
    if !common::prereq::require(
        "the official OpenAI Python SDK",
        common::prereq::python(Some("openai")),
        "python3 -m pip install 'openai>=1.40'",
    ) {
        return;
    }
    let sim = Sim::start(&[]).await;
    let mut cfg = config(&sim, 2, json!({}));
    cfg["models"]["emb"] = json!({"provider": "sim", "base_url": sim.base_url(),
        "price": {"input": 0.02, "output": 0.0}, "kind": "embedding", "dimensions": 64,
        "max_input_tokens": 200});
    let node = Node::start(&cfg).await;
    let url = format!("{}/v1", node.url);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg("-c")
            .arg(EMBEDDINGS_SCRIPT)
            .env("NODE_BASE", url)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["count"], 3, "{v}");
    assert_eq!(v["indexes"], json!([0, 1, 2]), "{v}");
    assert_eq!(v["dims"], json!([64, 64, 64]), "{v}");
    let (near, far) = (v["near"].as_f64().unwrap(), v["far"].as_f64().unwrap());
    assert!(
        near > 0.6 && far.abs() < 0.25,
        "near {near}, far {far}: {v}"
    );
    assert!(
        v["same_as_float"].as_f64().unwrap() < 1e-6,
        "base64 and float agree: {v}"
    );
    assert_eq!(v["model"], "emb", "{v}");
    let usage = v["usage"].as_array().unwrap();
    assert!(usage[0].as_u64().unwrap() > 0, "{v}");
    assert_eq!(usage[0], usage[1], "{v}");
    assert!(v["float_usage"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        v["errors"]["too_long"],
        json!([400, "input_too_long"]),
        "{v}"
    );
    assert_eq!(
        v["errors"]["dimensions"],
        json!([400, "invalid_request"]),
        "{v}"
    );
    assert_eq!(
        v["errors"]["chat_model"],
        json!([400, "wrong_model_kind"]),
        "{v}"
    );
    assert_eq!(v["models"], json!(["emb", "fast", "smart"]), "{v}");
}

const ANTHROPIC_SCRIPT: &str = r#"
import json, os, anthropic
# The node's bearer token, sent the Anthropic way (`x-api-key`).
c = anthropic.Anthropic(base_url=os.environ["NODE_URL"], api_key=os.environ["NODE_TOKEN"], max_retries=0)
try:
    anthropic.Anthropic(base_url=os.environ["NODE_URL"], api_key="wrong", max_retries=0).messages.create(
        model="fast", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    unauthorized = None
except anthropic.AuthenticationError as e:
    unauthorized = e.status_code
msgs = [{"role": "user", "content": "hello from the official Anthropic SDK"}]
r = c.messages.create(model="fast", max_tokens=200, system="You are terse.", messages=msgs)
with c.messages.stream(model="fast", max_tokens=200, system="You are terse.", messages=msgs) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
try:
    c.messages.create(model="nope", max_tokens=10, messages=msgs)
    missing = None
except anthropic.NotFoundError as e:
    missing = [e.status_code, e.body["error"]["type"]]
try:
    c.messages.create(model="fast", max_tokens=10, messages=[{"role": "robot", "content": "x"}])
    bad_role = None
except anthropic.BadRequestError as e:
    bad_role = e.status_code
print(json.dumps({
    "type": r.type,
    "content": r.content[0].text,
    "stop_reason": r.stop_reason,
    "usage": [r.usage.input_tokens, r.usage.output_tokens],
    "streamed": streamed,
    "final_stop": final.stop_reason,
    "final_output_tokens": final.usage.output_tokens,
    "missing": missing,
    "bad_role": bad_role,
    "unauthorized": unauthorized,
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_sdk_works_unchanged() {
    if !common::prereq::require(
        "the official Anthropic Python SDK",
        common::prereq::python(Some("anthropic")),
        "python3 -m pip install 'anthropic>=0.34'",
    ) {
        return;
    }
    let sim = Sim::start(&[]).await;
    let token = "anthropic-sdk-token";
    let node = Node::start_with_env(
        &config(&sim, 2, json!({})),
        &[("OPENCLAW_API_TOKEN", token)],
    )
    .await;
    let url = node.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg("-c")
            .arg(ANTHROPIC_SCRIPT)
            .env("NODE_URL", url)
            .env("NODE_TOKEN", token)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "message", "{v}");
    let content = v["content"].as_str().unwrap();
    assert!(!content.is_empty(), "{v}");
    assert_eq!(v["streamed"].as_str(), Some(content), "{v}");
    let stop = v["stop_reason"].as_str().unwrap();
    assert!(["end_turn", "max_tokens"].contains(&stop), "{v}");
    assert_eq!(v["final_stop"], stop, "{v}");
    assert!(v["usage"][0].as_u64().unwrap() > 0, "{v}");
    assert!(v["final_output_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["missing"], json!([404, "not_found_error"]), "{v}");
    assert_eq!(v["bad_role"], 400, "{v}");
    assert_eq!(v["unauthorized"], 401, "{v}");
    // Routed and accounted like chat completions: the simulator saw the answered calls.
    let answered = sim
        .calls(None)
        .await
        .iter()
        .filter(|c| c["status"] == 200)
        .count();
    assert_eq!(answered, 2);
}
