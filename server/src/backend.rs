//! A shared inference server instead of the in-process engine (`backend` setting): llama-server
//! (`/infill` for a model with fill-in-the-middle tokens, `/completion` otherwise, both with
//! `cache_prompt`) or any OpenAI-compatible `/v1/completions` endpoint (vLLM, TGI, Ollama).
//!
//! Knows nothing of LSP: it takes the text around the cursor and gives back the raw generated
//! text. Blocking (ureq, rustls for `https`), run on tokio's blocking pool by the caller. Answers
//! are streamed (server-sent events) so that a cancelled request stops at the next token: the
//! reader is dropped, which closes the connection, and llama-server stops generating for a
//! client that went away. Network only to the configured URL.

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Which protocol the backend speaks.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Api {
    /// `openai` when the URL ends in `/v1`, else `llamaServer`.
    #[default]
    Auto,
    LlamaServer,
    Openai,
}

/// The `backend` setting.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendConfig {
    /// The server's base URL: `http://gpu-box:8012` (llama-server), `http://gpu-box:8000/v1`
    /// (OpenAI-compatible).
    pub url: String,
    /// The model name OpenAI-compatible servers route by (llama-server ignores it).
    #[serde(default)]
    pub model: Option<String>,
    /// The environment variable holding the API key, sent as `Authorization: Bearer`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api: Api,
    /// Most milliseconds for one request, connection included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// The text around a cursor, as llama.vim sends it to llama-server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    /// The lines before the cursor's line.
    pub prefix: String,
    /// The cursor's line up to the cursor.
    pub middle: String,
    /// The rest of the cursor's line and the lines after it.
    pub suffix: String,
    /// Chunks of other files (`path`, text), for `/infill`'s `input_extra`.
    pub extra: Vec<(String, String)>,
    /// What starts a line comment in the file's language: the chunks' path lines in a
    /// prompt without FIM.
    pub line_comment: String,
    pub max_tokens: u32,
    pub single_line: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the inference server at {url} cannot be reached: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the inference server at {url} answered {status}: {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the inference server at {url} sent an answer that is not a completion: {detail}")]
    Malformed { url: String, detail: String },
    #[error("the API key variable {0} is not set")]
    NoApiKey(String),
    #[error("backend url {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
}

/// A connection to the configured server. Cheap to share; one per configuration.
#[derive(Debug)]
pub struct Backend {
    config: BackendConfig,
    base: String,
    api: Api,
    agent: ureq::Agent,
    /// Whether llama-server's model has FIM tokens (it refuses `/infill` otherwise); asked once.
    fim: OnceLock<bool>,
    /// The last request failed to get an answer.
    down: AtomicBool,
}

impl Backend {
    pub fn new(config: BackendConfig) -> Result<Backend, BackendError> {
        let base = config.url.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base).map_err(|_| BackendError::BadUrl(base.clone()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(BackendError::BadUrl(base));
        }
        let api = match config.api {
            Api::Auto if base.ends_with("/v1") => Api::Openai,
            Api::Auto => Api::LlamaServer,
            api => api,
        };
        let timeout = Duration::from_millis(config.timeout_ms.max(100));
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(timeout.min(Duration::from_secs(3))))
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .new_agent();
        Ok(Backend {
            config,
            base,
            api,
            agent,
            fim: OnceLock::new(),
            down: AtomicBool::new(false),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    pub fn api(&self) -> Api {
        self.api
    }

    pub fn model(&self) -> Option<&str> {
        self.config.model.as_deref()
    }

    /// Whether the last request got an answer (true before the first).
    pub fn reachable(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// Records whether a request got an answer; true when that changes [`Self::reachable`].
    pub fn set_reachable(&self, reachable: bool) -> bool {
        self.down.swap(!reachable, Ordering::Relaxed) == reachable
    }

    /// Generates for `ask`, greedy. `Ok(None)` when `cancel` was set before the answer was
    /// complete (the connection is closed at once, so the server stops generating).
    pub fn complete(&self, ask: &Ask, cancel: &AtomicBool) -> Result<Option<String>, BackendError> {
        let (path, body) = match self.api {
            Api::Openai => ("completions", self.openai_body(ask)),
            _ if self.uses_fim()? => ("infill", infill_body(ask)),
            _ => ("completion", completion_body(ask)),
        };
        self.stream(path, &body, cancel)
    }

    /// Whether llama-server's model has FIM tokens (so requests go to `/infill`); asked once.
    pub fn uses_fim(&self) -> Result<bool, BackendError> {
        if let Some(&fim) = self.fim.get() {
            return Ok(fim);
        }
        // llama-server answers 501 to /infill when its model has no FIM tokens.
        let probe =
            json!({"input_prefix": "a", "input_suffix": "", "n_predict": 1, "stream": false});
        let status = self.post("infill", &probe)?.status().as_u16();
        let fim = status == 200;
        tracing::info!(url = %self.base, fim, "backend model");
        Ok(*self.fim.get_or_init(|| fim))
    }

    fn openai_body(&self, ask: &Ask) -> Value {
        // The completions API has no standard fill-in-the-middle (vLLM refuses `suffix`): the
        // prompt is the text before the cursor.
        let mut body = json!({
            "prompt": format!("{}{}", ask.prefix, ask.middle),
            "max_tokens": ask.max_tokens,
            "temperature": 0.0,
            "stream": true,
        });
        if let Some(model) = &self.config.model {
            body["model"] = json!(model);
        }
        if ask.single_line {
            body["stop"] = json!(["\n"]);
        }
        body
    }

    fn post(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<ureq::http::Response<ureq::Body>, BackendError> {
        let mut request = self.agent.post(format!("{}/{path}", self.base));
        if let Some(var) = &self.config.api_key_env {
            let key = std::env::var(var).map_err(|_| BackendError::NoApiKey(var.clone()))?;
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        request
            .send_json(body)
            .map_err(|e| BackendError::Unreachable {
                url: self.base.clone(),
                detail: e.to_string(),
            })
    }

    fn stream(
        &self,
        path: &str,
        body: &Value,
        cancel: &AtomicBool,
    ) -> Result<Option<String>, BackendError> {
        let response = self.post(path, body)?;
        let status = response.status().as_u16();
        if status != 200 {
            let detail = response
                .into_body()
                .read_to_string()
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            return Err(BackendError::Refused {
                url: self.base.clone(),
                status,
                detail,
            });
        }
        let malformed = |detail: String| BackendError::Malformed {
            url: self.base.clone(),
            detail,
        };
        let mut text = String::new();
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            if cancel.load(Ordering::Relaxed) {
                // Dropping the reader closes the connection.
                return Ok(None);
            }
            let line = line.map_err(|e| BackendError::Unreachable {
                url: self.base.clone(),
                detail: e.to_string(),
            })?;
            match parse_event(&line, self.api).map_err(malformed)? {
                Event::Text { text: piece, done } => {
                    text.push_str(&piece);
                    if done {
                        break;
                    }
                }
                Event::Done => break,
                Event::Other => {}
            }
        }
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        Ok(Some(text))
    }
}

fn llama_body(ask: &Ask) -> Value {
    let mut body = json!({
        "n_predict": ask.max_tokens,
        "temperature": 0.0,
        "top_k": 1,
        "cache_prompt": true,
        "stream": true,
    });
    if ask.single_line {
        body["stop"] = json!(["\n"]);
    }
    body
}

/// `/infill` as llama.vim sends it: the cursor's line as `prompt` (after the middle token, so
/// typing on it only appends), the other files as `input_extra`.
fn infill_body(ask: &Ask) -> Value {
    let mut body = llama_body(ask);
    body["input_prefix"] = json!(ask.prefix);
    body["input_suffix"] = json!(ask.suffix);
    body["prompt"] = json!(ask.middle);
    body["input_extra"] = ask
        .extra
        .iter()
        .map(|(filename, text)| json!({"filename": filename, "text": text}))
        .collect();
    body
}

fn completion_body(ask: &Ask) -> Value {
    let mut body = llama_body(ask);
    let mut prompt = String::new();
    for (path, text) in &ask.extra {
        prompt.push_str(&format!("{} {path}\n{text}", ask.line_comment));
        if !text.ends_with('\n') {
            prompt.push('\n');
        }
    }
    prompt.push_str(&ask.prefix);
    prompt.push_str(&ask.middle);
    body["prompt"] = json!(prompt);
    body
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Text { text: String, done: bool },
    Done,
    Other,
}

/// One line of a server-sent event stream: llama-server's `data: {"content", "stop"}` or
/// OpenAI's `data: {"choices": [{"text", "finish_reason"}]}` and `data: [DONE]`.
fn parse_event(line: &str, api: Api) -> Result<Event, String> {
    let Some(data) = line.strip_prefix("data:") else {
        // Blank separators, comments, `event:` lines.
        return Ok(Event::Other);
    };
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Event::Done);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| format!("{e} in {data:.200}"))?;
    if let Some(error) = v.get("error") {
        return Err(format!("error event: {error}"));
    }
    match api {
        Api::Openai => {
            let choice = &v["choices"][0];
            let text = choice["text"]
                .as_str()
                .ok_or_else(|| format!("no choices[0].text in {data:.200}"))?;
            Ok(Event::Text {
                text: text.to_owned(),
                done: !choice["finish_reason"].is_null(),
            })
        }
        _ => {
            let text = v["content"]
                .as_str()
                .ok_or_else(|| format!("no content in {data:.200}"))?;
            Ok(Event::Text {
                text: text.to_owned(),
                done: v["stop"].as_bool().unwrap_or(false),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_both_protocols() {
        assert_eq!(
            parse_event(r#"data: {"content":"ab","stop":false}"#, Api::LlamaServer),
            Ok(Event::Text {
                text: "ab".into(),
                done: false
            })
        );
        assert_eq!(
            parse_event(
                r#"data: {"content":"","stop":true,"timings":{}}"#,
                Api::LlamaServer
            ),
            Ok(Event::Text {
                text: String::new(),
                done: true
            })
        );
        assert_eq!(
            parse_event(
                r#"data: {"choices":[{"text":"x(","finish_reason":null}]}"#,
                Api::Openai
            ),
            Ok(Event::Text {
                text: "x(".into(),
                done: false
            })
        );
        assert_eq!(parse_event("data: [DONE]", Api::Openai), Ok(Event::Done));
        assert_eq!(parse_event("", Api::Openai), Ok(Event::Other));
        assert_eq!(parse_event(": ping", Api::LlamaServer), Ok(Event::Other));
        assert!(parse_event("data: {nope", Api::LlamaServer).is_err());
        assert!(parse_event(r#"data: {"error":{"code":500}}"#, Api::LlamaServer).is_err());
    }

    #[test]
    fn bodies_follow_llama_vim() {
        let ask = Ask {
            prefix: "def f():\n".into(),
            middle: "    ret".into(),
            suffix: "\n\nf()\n".into(),
            extra: vec![("util.py".into(), "X = 1\n".into())],
            line_comment: "#".into(),
            max_tokens: 16,
            single_line: true,
        };
        let b = infill_body(&ask);
        assert_eq!(b["input_prefix"], "def f():\n");
        assert_eq!(b["prompt"], "    ret");
        assert_eq!(b["input_suffix"], "\n\nf()\n");
        assert_eq!(b["input_extra"][0]["filename"], "util.py");
        assert_eq!(b["stop"], json!(["\n"]));
        assert_eq!(b["cache_prompt"], true);
        let c = completion_body(&ask);
        assert_eq!(c["prompt"], "# util.py\nX = 1\ndef f():\n    ret");
    }

    #[test]
    fn the_api_follows_the_url_and_bad_urls_are_refused() {
        let config = |url: &str| BackendConfig {
            url: url.into(),
            model: None,
            api_key_env: None,
            api: Api::Auto,
            timeout_ms: 1000,
        };
        let b = Backend::new(config("http://box:8000/v1/")).expect("backend");
        assert_eq!((b.api(), b.url()), (Api::Openai, "http://box:8000/v1"));
        let b = Backend::new(config("https://box:8012")).expect("backend");
        assert_eq!(b.api(), Api::LlamaServer);
        for bad in ["box:8012", "file:///etc/passwd", "ftp://box", "http://"] {
            assert!(Backend::new(config(bad)).is_err(), "{bad}");
        }
    }
}
