//! The `backend` setting against a stand-in for llama-server (a local HTTP server speaking its
//! `/infill` protocol, streaming server-sent events): the real binary with no local model sends
//! its prompts there, answers every request once, closes a superseded request's connection so
//! the server stops generating, and says once when the server is down.

mod stdio;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use stdio::{StdioServer, BIN};

/// One streamed request as the stand-in saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
    /// Events written before the client went away, if it did.
    aborted_after: Option<usize>,
    finished: bool,
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
}

/// What the stand-in generates for a request: a slow, long answer when the text before the
/// cursor ends in `slow`, else ` + b` then a new line.
fn answer_for(body: &Value) -> (Vec<String>, Duration) {
    let prompt = body["prompt"].as_str().unwrap_or_default();
    if prompt.ends_with("slow") {
        (vec![" x".to_owned(); 400], Duration::from_millis(20))
    } else {
        let pieces = [" +", " b", "\n", "def", " more"];
        (
            pieces.iter().map(|s| (*s).to_owned()).collect(),
            Duration::ZERO,
        )
    }
}

fn start_llama_server_standin() -> (String, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let log = Arc::new(Mutex::new(Log::default()));
    let shared = Arc::clone(&log);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = Arc::clone(&shared);
            std::thread::spawn(move || serve(stream, &log));
        }
    });
    (url, log)
}

fn serve(stream: TcpStream, log: &Mutex<Log>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut head = String::new();
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line.to_ascii_lowercase().starts_with("authorization:") {
            authorization = Some(line["authorization:".len()..].trim().to_owned());
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut out = stream;
    if body["stream"] != true {
        // The FIM probe (`n_predict: 1`): this model has FIM tokens.
        let answer = json!({"content": "a", "stop": true}).to_string();
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
        return;
    }
    let index = {
        let mut log = log.lock().expect("log");
        let openai = path.ends_with("/v1/completions");
        log.requests.push(Seen {
            path,
            authorization,
            body: body.clone(),
            aborted_after: None,
            finished: false,
        });
        (log.requests.len() - 1, openai)
    };
    let (index, openai) = index;
    let event = |piece: &str, stop: bool| {
        if openai {
            let reason = if stop { json!("stop") } else { Value::Null };
            json!({"choices": [{"text": piece, "index": 0, "finish_reason": reason}]})
        } else {
            json!({"content": piece, "stop": stop})
        }
    };
    let (pieces, delay) = answer_for(&body);
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let mut result = out.write_all(head.as_bytes());
    let mut chunk = |data: &str| -> std::io::Result<()> {
        write!(out, "{:x}\r\n{data}\r\n", data.len())?;
        out.flush()
    };
    let mut sent = 0;
    for piece in &pieces {
        if result.is_err() {
            break;
        }
        std::thread::sleep(delay);
        result = chunk(&format!("data: {}\n\n", event(piece, false)));
        if result.is_ok() {
            sent += 1;
        }
    }
    if result.is_ok() {
        result = chunk(&format!("data: {}\n\n", event("", true)));
        if openai && result.is_ok() {
            result = chunk("data: [DONE]\n\n");
        }
        result = result.and_then(|()| chunk(""));
    }
    let mut log = log.lock().expect("log");
    let seen = &mut log.requests[index];
    seen.finished = result.is_ok();
    if result.is_err() {
        seen.aborted_after = Some(sent);
    }
}

fn server_with(backend: Value) -> StdioServer {
    server_with_env(backend, &[])
}

fn server_with_env(backend: Value, env: &[(&str, &str)]) -> StdioServer {
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("backend-home-{}", std::process::id()));
    let mut cmd = Command::new(BIN);
    cmd.args(["--stdio", "--log-level", "debug"])
        .env_remove("AMD_LSP_MODEL")
        .env("AMD_LSP_CACHE", home.join("cache"))
        .env("HF_HOME", home.join("hf"))
        .envs(env.iter().copied());
    let mut server = StdioServer::spawn(&mut cmd, Stdio::null());
    server.request(
        "initialize",
        json!({
            "processId": null,
            "capabilities": {"textDocument": {"inlineCompletion": {}}},
            "initializationOptions": {"debounceMs": 0, "debounceMaxMs": 0, "backend": backend},
        }),
    );
    server.notify("initialized", json!({}));
    server
}

fn open(server: &mut StdioServer, uri: &str, text: &str, version: i64) {
    server.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "python", "version": version, "text": text}}),
    );
}

fn inline_params(uri: &str, line: u32, character: u32) -> Value {
    json!({
        "textDocument": {"uri": uri},
        "position": {"line": line, "character": character},
        "context": {"triggerKind": 2},
    })
}

/// Reads until every id in `ids` is answered; returns the answers by id (each must come once)
/// and the `window/showMessage` texts seen meanwhile.
fn answers(server: &mut StdioServer, ids: &[i64]) -> (Vec<Value>, Vec<String>) {
    let mut got: Vec<Option<Value>> = vec![None; ids.len()];
    let mut messages = Vec::new();
    while got.iter().any(Option::is_none) {
        let msg = server.read();
        if msg["method"] == "window/showMessage" {
            messages.push(
                msg["params"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        if msg.get("method").is_some() {
            continue;
        }
        if let Some(i) = ids.iter().position(|id| msg["id"] == *id) {
            assert!(got[i].is_none(), "request {} answered twice", ids[i]);
            got[i] = Some(msg);
        }
    }
    (got.into_iter().map(Option::unwrap).collect(), messages)
}

fn items(answer: &Value) -> Vec<String> {
    answer["result"]["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["insertText"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_backend_answers_and_a_superseded_request_stops_its_generation() {
    let (url, log) = start_llama_server_standin();
    let mut server = server_with(json!({"url": url}));
    let status = server.settled_status();
    assert_eq!(status["state"], "ready", "{status}");
    assert_eq!(status["backend"]["url"], url.as_str());
    assert_eq!(status["backend"]["api"], "llamaServer");
    assert_eq!(status["model"]["device"], "remote");

    // A suggestion, made from llama.vim's split of the text and cleaned to one line.
    let uri = "file:///t/a.py";
    open(
        &mut server,
        uri,
        "def add(a, b):\n    return a\n\nprint(add(1, 2))\n",
        1,
    );
    let answer = server.request("textDocument/inlineCompletion", inline_params(uri, 1, 12));
    assert_eq!(items(&answer), ["    return a + b"], "{answer}");
    let seen = log.lock().expect("log").requests[0].clone();
    assert_eq!(seen.path, "/infill");
    assert_eq!(seen.body["input_prefix"], "def add(a, b):\n");
    assert_eq!(seen.body["prompt"], "    return a");
    assert_eq!(seen.body["input_suffix"], "\n\nprint(add(1, 2))\n");
    assert_eq!(seen.body["stop"], json!(["\n"]));
    assert_eq!(seen.body["cache_prompt"], true);

    // Typing through it is served from the cache: no request goes out.
    server.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 2},
               "contentChanges": [{"range": {"start": {"line": 1, "character": 12}, "end": {"line": 1, "character": 12}}, "text": " +"}]}),
    );
    let answer = server.request("textDocument/inlineCompletion", inline_params(uri, 1, 14));
    assert_eq!(items(&answer), ["    return a + b"], "{answer}");
    assert_eq!(log.lock().expect("log").requests.len(), 1);

    // A slow request, superseded by the next keystroke: answered empty, once, and its
    // connection closed while the server was still generating.
    let slow = "file:///t/slow.py";
    open(&mut server, slow, "def f():\n    x = slow", 1);
    let first = server
        .client
        .request("textDocument/inlineCompletion", inline_params(slow, 1, 12))
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.lock().expect("log").requests.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the server"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    server.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": slow, "version": 2},
               "contentChanges": [{"text": "def f():\n    x = 1\n    y = "}]}),
    );
    let second = server
        .client
        .request("textDocument/inlineCompletion", inline_params(slow, 2, 8))
        .expect("write");
    let (got, _) = answers(&mut server, &[first, second]);
    assert!(items(&got[0]).is_empty(), "{}", got[0]);
    let next = items(&got[1]);
    assert!(
        next.len() == 1 && next[0].starts_with("    y = ") && next[0].ends_with("+ b"),
        "{}",
        got[1]
    );
    // The stand-in notices the closed connection at its next write.
    let deadline = Instant::now() + Duration::from_secs(10);
    let superseded = loop {
        let seen = log.lock().expect("log").requests[1].clone();
        if seen.finished || seen.aborted_after.is_some() {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the slow request is still streaming"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!superseded.finished, "{superseded:?}");
    let sent = superseded.aborted_after.expect("aborted");
    assert!(
        sent < 100,
        "generation went on after the cancel: {sent} of 400 events"
    );
    let status = server.request("amd/status", Value::Null)["result"].clone();
    assert_eq!(status["backend"]["reachable"], true);
    server.shutdown();
}

#[test]
fn an_openai_compatible_endpoint_gets_the_prefix_the_model_and_the_key() {
    let (url, log) = start_llama_server_standin();
    let key_var = "AMD_LSP_TEST_BACKEND_KEY";
    let mut server = server_with_env(
        json!({"url": format!("{url}/v1"), "model": "qwen-coder", "apiKeyEnv": key_var}),
        &[(key_var, "sekret")],
    );
    let status = server.settled_status();
    assert_eq!(status["backend"]["api"], "openai", "{status}");
    assert_eq!(status["model"]["name"], "qwen-coder");
    let uri = "file:///t/a.py";
    open(&mut server, uri, "def add(a, b):\n    return a\n", 1);
    let answer = server.request("textDocument/inlineCompletion", inline_params(uri, 1, 12));
    assert_eq!(items(&answer), ["    return a + b"], "{answer}");
    let seen = log.lock().expect("log").requests[0].clone();
    assert_eq!(seen.path, "/v1/completions");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer sekret"));
    assert_eq!(seen.body["model"], "qwen-coder");
    assert_eq!(seen.body["prompt"], "def add(a, b):\n    return a");
    assert_eq!(seen.body["stop"], json!(["\n"]));
    server.shutdown();
}

#[test]
fn a_backend_that_is_down_gives_one_message_and_empty_answers() {
    // A port nothing listens on.
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let mut server = server_with(json!({"url": url, "timeoutMs": 2000}));
    assert_eq!(server.settled_status()["state"], "ready");
    let uri = "file:///t/a.py";
    open(&mut server, uri, "def add(a, b):\n    return a\n", 1);
    let mut ids = Vec::new();
    let mut messages = Vec::new();
    for character in [12, 11, 10] {
        let id = server
            .client
            .request(
                "textDocument/inlineCompletion",
                inline_params(uri, 1, character),
            )
            .expect("write");
        let (got, shown) = answers(&mut server, &[id]);
        assert!(items(&got[0]).is_empty(), "{}", got[0]);
        assert!(got[0].get("error").is_none(), "{}", got[0]);
        ids.push(id);
        messages.extend(shown);
    }
    let status = server.request("amd/status", Value::Null)["result"].clone();
    assert_eq!(status["backend"]["reachable"], false, "{status}");
    assert_eq!(status["counters"]["errors"], 3, "{status}");
    // The message goes out before the first failed answer; the next failures add none.
    let down: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("cannot be reached"))
        .collect();
    assert_eq!(down.len(), 1, "{messages:?}");
    server.shutdown();
}

#[test]
fn a_bad_backend_url_is_refused_with_a_message() {
    let mut server = server_with(json!({"url": "gpu-box:8012"}));
    let status = server.settled_status();
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not an http:// or https:// URL"),
        "{status}"
    );
    server.shutdown();
}

#[test]
fn a_burst_of_requests_and_cancellations_is_answered_once_each() {
    let (url, log) = start_llama_server_standin();
    let mut server = server_with(json!({"url": url}));
    assert_eq!(server.settled_status()["state"], "ready");
    let uri = "file:///t/burst.py";
    open(&mut server, uri, "def f():\n    x = slow\n    y = 1\n", 1);
    // Slow and fast requests, edits between them, and $/cancelRequest for some: each request
    // gets exactly one answer and nothing is left streaming.
    let mut ids = Vec::new();
    for i in 0..40u32 {
        let (line, character) = if i % 2 == 0 { (1, 12) } else { (2, 9) };
        let id = server
            .client
            .request(
                "textDocument/inlineCompletion",
                inline_params(uri, line, character),
            )
            .expect("write");
        ids.push(id);
        if i % 5 == 0 {
            server.notify("$/cancelRequest", json!({"id": id}));
        }
        if i % 7 == 0 {
            server.notify(
                "textDocument/didChange",
                json!({"textDocument": {"uri": uri, "version": 2 + i},
                       "contentChanges": [{"text": "def f():\n    x = slow\n    y = 1\n"}]}),
            );
        }
    }
    let (got, _) = answers(&mut server, &ids);
    for answer in &got {
        let cancelled = answer["error"]["code"] == -32800;
        assert!(answer.get("error").is_none() || cancelled, "{answer}");
    }
    // Nothing more for the burst: the next answer is the status.
    let status = server.request("amd/status", Value::Null);
    assert!(status["result"]["counters"]["requests"].as_u64() >= Some(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let streaming = log
            .lock()
            .expect("log")
            .requests
            .iter()
            .filter(|r| !r.finished && r.aborted_after.is_none())
            .count();
        if streaming == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{streaming} requests still streaming"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.shutdown();
}

#[test]
fn switching_between_a_backend_and_the_local_model_at_run_time() {
    let (url, log) = start_llama_server_standin();
    let mut cmd = Command::new(BIN);
    cmd.args(["--stdio", "--model"]).arg(stdio::tiny_model());
    let mut server = StdioServer::spawn(&mut cmd, Stdio::null());
    server.request(
        "initialize",
        json!({"capabilities": {"textDocument": {"inlineCompletion": {}}},
               "initializationOptions": {"debounceMs": 0, "debounceMaxMs": 0}}),
    );
    server.notify("initialized", json!({}));
    let status = server.settled_status();
    assert_eq!(status["state"], "ready");
    assert!(
        status["backend"].is_null() && status["model"]["device"] != "remote",
        "{status}"
    );
    let uri = "file:///t/a.py";
    open(&mut server, uri, "def add(a, b):\n    return a\n", 1);

    // To the backend: the local model is let go, requests go out.
    let settings = |backend: Value| json!({"settings": {"debounceMs": 0, "debounceMaxMs": 0, "backend": backend}});
    server.notify(
        "workspace/didChangeConfiguration",
        settings(json!({"url": url})),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.settled_status()["backend"].is_null() {
        assert!(Instant::now() < deadline, "the backend was not taken up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = server.request("textDocument/inlineCompletion", inline_params(uri, 1, 12));
    assert_eq!(items(&answer), ["    return a + b"], "{answer}");
    assert_eq!(log.lock().expect("log").requests.len(), 1);

    // Back to the local model: nothing more goes to the backend.
    server.notify("workspace/didChangeConfiguration", settings(Value::Null));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = server.settled_status();
        if status["backend"].is_null() && status["state"] == "ready" {
            assert_ne!(status["model"]["device"], "remote", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = server.request("textDocument/inlineCompletion", inline_params(uri, 1, 11));
    assert!(answer.get("error").is_none(), "{answer}");
    assert_eq!(log.lock().expect("log").requests.len(), 1);
    server.shutdown();
}
