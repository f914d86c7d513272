//! The simulator driven over real HTTP on 127.0.0.1:0, through the real providers
//! (`OpenAiProvider`, `AnthropicProvider`) and raw reqwest calls.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use openclaw_proto::openai::{ChatCompletionRequest, ChatMessage, Usage};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::calls::CallsView;
use super::{Sim, SimOptions};
use crate::calls::providers::anthropic::AnthropicProvider;
use crate::calls::providers::openai::OpenAiProvider;
use crate::calls::providers::{CallContext, ChunkStream, Provider, ProviderError};
use crate::config::{ProviderKind, Secret};
use crate::tokens;

struct Running {
    /// `http://127.0.0.1:<port>`
    root: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(opts: SimOptions) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Sim::new(opts).serve(listener, shutdown.clone()));
        Running {
            root,
            shutdown,
            task,
        }
    }

    fn base(&self) -> String {
        format!("{}/v1", self.root)
    }

    fn openai(&self, model: &str) -> OpenAiProvider {
        OpenAiProvider::new(
            reqwest::Client::new(),
            &self.base(),
            model,
            Some(Secret::new("sk-sentinel-openai")),
            ProviderKind::Sim,
        )
    }

    fn anthropic(&self, model: &str) -> AnthropicProvider {
        AnthropicProvider::new(
            reqwest::Client::new(),
            &self.base(),
            model,
            Secret::new("sk-ant-sentinel"),
        )
    }

    async fn calls(&self, query: &str) -> CallsView {
        reqwest::get(format!("{}/sim/calls{query}", self.root))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn put_faults(&self, body: Value) -> reqwest::Response {
        reqwest::Client::new()
            .put(format!("{}/sim/faults", self.root))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("sim stops promptly")
            .unwrap()
            .unwrap();
    }
}

fn request(model: &str, text: &str) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: model.into(),
        messages: vec![
            ChatMessage::new("system", "You are a simulator test."),
            ChatMessage::new("user", text),
        ],
        stream: false,
        max_tokens: None,
        max_completion_tokens: None,
        temperature: None,
        extra: Default::default(),
    }
}

fn ctx(id: &str, timeout_ms: u64) -> CallContext {
    CallContext {
        request_id: id.into(),
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// Text, finish reason and usage of a whole stream.
async fn drain(mut s: ChunkStream) -> (String, Option<String>, Option<Usage>, usize) {
    let (mut text, mut finish, mut usage, mut n) = (String::new(), None, None, 0);
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        n += 1;
        for ch in &c.choices {
            if let Some(t) = &ch.delta.content {
                text.push_str(t);
            }
            if ch.finish_reason.is_some() {
                finish = ch.finish_reason.clone();
            }
        }
        if c.usage.is_some() {
            usage = c.usage;
        }
    }
    (text, finish, usage, n)
}

#[tokio::test]
async fn openai_stream_and_plain_answers_agree() {
    let sim = Running::start(SimOptions::default()).await;
    let p = sim.openai("up-model");
    let req = request("gw-model", "Summarize the token usage of this week.");

    let plain = p.chat(&req, &ctx("t-plain", 5000)).await.unwrap();
    assert_eq!(
        plain.model, "gw-model",
        "model rewritten back to the gateway's name"
    );
    let text = plain.text();
    let usage = plain.usage.unwrap();
    // The simulator saw the upstream name: answers are a function of the model it sees.
    let expected = super::gen::generate("up-model", &req.messages, None, 256);
    assert_eq!(text, expected.text);
    assert_eq!(
        usage.prompt_tokens,
        u64::from(tokens::count_messages(&req.messages))
    );
    assert_eq!(usage.completion_tokens, u64::from(tokens::count(&text)));
    assert_eq!(plain.choices[0].finish_reason.as_deref(), Some("stop"));

    let stream = p.chat_stream(&req, &ctx("t-stream", 5000)).await.unwrap();
    let (s_text, finish, s_usage, chunks) = drain(stream).await;
    assert_eq!(s_text, text);
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(s_usage, Some(usage), "usage asked for with stream_options");
    assert!(chunks > 3, "{chunks} chunks");

    let calls = sim.calls("").await;
    assert_eq!(calls.count, 2);
    let ids: Vec<_> = calls.calls.iter().map(|c| c.task_id.clone()).collect();
    assert_eq!(ids, vec![Some("t-plain".into()), Some("t-stream".into())]);
    assert!(calls
        .calls
        .iter()
        .all(|c| c.model == "up-model" && c.status == 200));
    assert_eq!(calls.calls[1].output_tokens as u64, usage.completion_tokens);
    assert!(calls.calls[1].stream);
    sim.stop().await;
}

#[tokio::test]
async fn a_capped_answer_finishes_with_length() {
    let sim = Running::start(SimOptions::default()).await;
    let p = sim.openai("m");
    let mut req = request("m", "Write a long essay.");
    req.max_tokens = Some(5);
    let r = p.chat(&req, &ctx("t", 5000)).await.unwrap();
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("length"));
    assert_eq!(r.usage.unwrap().completion_tokens, 5);
    req.max_tokens = None;
    req.max_completion_tokens = Some(7);
    let (text, finish, usage, _) = drain(p.chat_stream(&req, &ctx("t", 5000)).await.unwrap()).await;
    assert_eq!(finish.as_deref(), Some("length"));
    assert_eq!(usage.unwrap().completion_tokens, 7);
    assert_eq!(tokens::count(&text), 7);
    sim.stop().await;
}

#[tokio::test]
async fn anthropic_provider_over_real_http() {
    let sim = Running::start(SimOptions::default()).await;
    let req = request("claude-gw", "Explain the priority queue.");
    let a = sim.anthropic("claude-up");
    let plain = a.chat(&req, &ctx("a-1", 5000)).await.unwrap();
    assert_eq!(plain.model, "claude-gw");
    assert_eq!(plain.choices[0].finish_reason.as_deref(), Some("stop"));
    let usage = plain.usage.unwrap();
    assert_eq!(
        usage.prompt_tokens,
        u64::from(tokens::count_messages(&req.messages))
    );
    assert_eq!(
        usage.completion_tokens,
        u64::from(tokens::count(&plain.text()))
    );

    // The same conversation through the OpenAI protocol gets the same answer.
    let o = sim
        .openai("claude-up")
        .chat(&req, &ctx("o-1", 5000))
        .await
        .unwrap();
    assert_eq!(o.text(), plain.text());
    assert_eq!(o.usage, plain.usage);

    let (text, finish, s_usage, _) =
        drain(a.chat_stream(&req, &ctx("a-2", 5000)).await.unwrap()).await;
    assert_eq!(text, plain.text());
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(s_usage, plain.usage);

    let mut capped = req.clone();
    capped.max_tokens = Some(3);
    let r = a.chat(&capped, &ctx("a-3", 5000)).await.unwrap();
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("length"));
    assert_eq!(r.usage.unwrap().completion_tokens, 3);

    let calls = sim.calls("?task_id=a-2").await;
    assert_eq!(calls.calls.len(), 1);
    assert_eq!(calls.calls[0].api, "anthropic");
    assert!(calls.calls[0].stream);
    sim.stop().await;
}

#[tokio::test]
async fn raw_anthropic_stream_has_the_documented_event_sequence() {
    let sim = Running::start(SimOptions::default()).await;
    let body = json!({
        "model": "claude", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]
    });
    let text = reqwest::Client::new()
        .post(format!("{}/messages", sim.base()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        vec![
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    sim.stop().await;
}

#[tokio::test]
async fn per_model_faults_fail_one_model_only() {
    let sim = Running::start(SimOptions::default()).await;
    let r = sim
        .put_faults(json!({"retry_after_secs": 7, "models": {
            "broken": {"error_rate": 1.0},
            "limited": {"rate_limit_rate": 1.0},
            "stuck": {"hang_rate": 1.0}
        }}))
        .await;
    assert_eq!(r.status(), 200);

    let req = request("gw", "hello");
    let e = sim
        .openai("broken")
        .chat(&req, &ctx("f1", 5000))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Server { status: 500, .. }),
        "{e:?}"
    );
    let e = sim
        .anthropic("broken")
        .chat(&req, &ctx("f1b", 5000))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Server { status: 500, .. }),
        "{e:?}"
    );
    let e = sim
        .openai("broken")
        .chat_stream(&req, &ctx("f1c", 5000))
        .await
        .err();
    assert!(
        matches!(e, Some(ProviderError::Server { status: 500, .. })),
        "{e:?}"
    );

    let e = sim
        .openai("limited")
        .chat(&req, &ctx("f2", 5000))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    let e = sim
        .anthropic("limited")
        .chat_stream(&req, &ctx("f2b", 5000))
        .await
        .err();
    assert_eq!(
        e,
        Some(ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        })
    );

    // Hangs: each call ends at the client's own 300 ms deadline (the error carries it), not at
    // the simulator's ten-minute hang; the simulator records each as a hang (below).
    let e = sim
        .openai("stuck")
        .chat(&req, &ctx("f3", 300))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout(Duration::from_millis(300)));
    let e = sim
        .openai("stuck")
        .chat_stream(&req, &ctx("f3b", 300))
        .await
        .err();
    assert_eq!(e, Some(ProviderError::Timeout(Duration::from_millis(300))));
    let e = sim
        .anthropic("stuck")
        .chat(&req, &ctx("f3c", 300))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout(Duration::from_millis(300)));

    // Other models keep working.
    assert!(sim
        .openai("fine")
        .chat(&req, &ctx("ok", 5000))
        .await
        .is_ok());

    let calls = sim.calls("").await;
    let status_of = |t: &str| {
        calls
            .calls
            .iter()
            .find(|c| c.task_id.as_deref() == Some(t))
            .map(|c| (c.status, c.fault.clone()))
    };
    assert_eq!(status_of("f1"), Some((500, Some("500".into()))));
    assert_eq!(status_of("f2"), Some((429, Some("429".into()))));
    assert_eq!(status_of("f3"), Some((0, Some("hang".into()))));
    assert_eq!(status_of("f3b"), Some((0, Some("hang".into()))));
    assert_eq!(status_of("f3c"), Some((0, Some("hang".into()))));
    assert_eq!(status_of("ok"), Some((200, None)));
    assert_eq!(calls.count, 9);

    let faults: Value = reqwest::get(format!("{}/sim/faults", sim.root))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["retry_after_secs"], json!(7));
    assert_eq!(faults["models"]["broken"], json!({"error_rate": 1.0}));
    // Shutdown ends the hangs still held by the server.
    sim.stop().await;
}

#[tokio::test]
async fn request_directives_trigger_faults() {
    let sim = Running::start(SimOptions::default()).await;
    let p = sim.openai("m");
    let e = p
        .chat(&request("m", "please fail [sim:500]"), &ctx("d1", 5000))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Server { status: 500, .. }),
        "{e:?}"
    );
    let e = p
        .chat(&request("m", "[sim:429]"), &ctx("d2", 5000))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ProviderError::RateLimited {
                retry_after: Some(_)
            }
        ),
        "{e:?}"
    );
    let e = p
        .chat(&request("m", "[sim:hang]"), &ctx("d3", 200))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout(Duration::from_millis(200)));
    let e = p
        .chat(&request("m", "[sim:slow:2000]"), &ctx("d4", 200))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout(Duration::from_millis(200)));

    // The header wins over the text.
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", sim.base()))
        .header(super::FAULT_HEADER, "429")
        .json(&request("m", "[sim:500]"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    sim.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_are_logged() {
    let sim = Running::start(SimOptions::default()).await;
    let http = reqwest::Client::new();
    for body in [
        "{not json",
        r#"{"model":"m"}"#,
        r#"{"model":"m","messages":[]}"#,
    ] {
        let r = http
            .post(format!("{}/chat/completions", sim.base()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["code"].is_string());
    }
    // Through the provider, a 400 is final and carries the upstream message.
    let mut req = request("m", "x");
    req.messages.clear();
    let e = sim
        .openai("m")
        .chat(&req, &ctx("b", 5000))
        .await
        .unwrap_err();
    match &e {
        ProviderError::BadRequest {
            status: 400,
            message,
        } => {
            assert!(message.contains("messages"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains("sk-sentinel"));
    assert_eq!(sim.calls("").await.count, 4);

    // Bad fault patches are refused.
    assert_eq!(sim.put_faults(json!({"eror_rate": 1})).await.status(), 400);
    sim.stop().await;
}

#[tokio::test]
async fn calls_filter_reset_models_and_health() {
    let sim = Running::start(SimOptions {
        calls_max: 2,
        ..SimOptions::default()
    })
    .await;
    for (i, model) in ["a", "b", "c"].iter().enumerate() {
        sim.openai(model)
            .chat(&request(model, "hi"), &ctx(&format!("t{i}"), 5000))
            .await
            .unwrap();
    }
    let all = sim.calls("").await;
    assert_eq!(all.count, 3);
    assert_eq!(all.calls.len(), 2, "bounded by calls_max");
    let since = sim.calls(&format!("?since={}", all.calls[0].seq)).await;
    assert_eq!(since.calls.len(), 1);
    assert_eq!(since.calls[0].task_id.as_deref(), Some("t2"));
    assert!(sim.calls("?task_id=t0").await.calls.is_empty(), "evicted");

    let models: Value = reqwest::get(format!("{}/models", sim.base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(["a", "b", "c"].iter().all(|m| ids.contains(m)), "{ids:?}");

    let r = reqwest::Client::new()
        .delete(format!("{}/sim/calls", sim.root))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(sim.calls("").await.count, 0);
    assert_eq!(
        reqwest::get(format!("{}/health", sim.root))
            .await
            .unwrap()
            .status(),
        200
    );
    sim.stop().await;
}

#[tokio::test]
async fn latency_and_chunk_delay_are_applied() {
    let sim = Running::start(SimOptions {
        latency_ms: 300,
        stream_chunk_delay_ms: 1,
        ..SimOptions::default()
    })
    .await;
    let p = sim.openai("m");
    // A deadline below the latency times out, one above it does not.
    let e = p
        .chat(&request("m", "x"), &ctx("l1", 50))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout(Duration::from_millis(50)));
    let (text, _, _, _) = drain(
        p.chat_stream(&request("m", "x"), &ctx("l2", 10_000))
            .await
            .unwrap(),
    )
    .await;
    assert!(!text.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    // Bind then drop to get a port nobody listens on.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let p = OpenAiProvider::new(
        reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}/v1"),
        "m",
        Some(Secret::new("sk-sentinel-openai")),
        ProviderKind::Openai,
    );
    let e = p
        .chat(&request("m", "x"), &ctx("c", 5000))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Connect(_)), "{e:?}");
    assert!(!e.to_string().contains("sk-sentinel"));
    let e = p
        .chat_stream(&request("m", "x"), &ctx("c", 5000))
        .await
        .err();
    assert!(matches!(e, Some(ProviderError::Connect(_))), "{e:?}");
    assert_eq!(p.kind(), ProviderKind::Openai);
}
