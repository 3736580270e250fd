//! End-to-end tests: the real server in-process over duplex pipes, the real engine on the
//! tiny test model.

mod support;

use serde_json::{json, Value};
use support::{file_uri, wait, ClientSetup, TestClient};
use tokio::sync::oneshot;

const URI: &str = "file:///work/demo.py";
const DOC: &str =
    "import os\n\ndef load(path):\n    with open(path) as f:\n        return f.read()\n\nx = load(";

/// The text the single suggestion adds after the cursor at `x = load(`.
fn suggested_after_line(response: &Value) -> String {
    only_item(response).expect("a suggestion")["insertText"]
        .as_str()
        .expect("text")
        .strip_prefix("x = load(")
        .expect("starts with the line")
        .to_owned()
}

/// The single inline item of a response, or `None` for an empty answer.
fn only_item(response: &Value) -> Option<&Value> {
    if response.is_null() {
        return None;
    }
    let items = response["items"].as_array().expect("InlineCompletionList");
    assert!(items.len() <= 1, "{response}");
    items.first()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_edit_complete() {
    let (mut c, init) = TestClient::start(ClientSetup::default()).await;
    let caps = &init["capabilities"];
    assert_eq!(caps["inlineCompletionProvider"], true);
    assert!(
        caps.get("completionProvider").is_none(),
        "inline clients get no popup by default"
    );
    assert_eq!(caps["positionEncoding"], "utf-16");
    c.wait_model_ready().await;

    c.open(URI, DOC).await;
    // Type on the last line: `x = load(` → `x = load("data.txt"`.
    c.change(URI, 2, [[6, 9], [6, 9]], "\"data").await;
    c.change(URI, 3, [[6, 14], [6, 14]], ".txt\"").await;
    let response = c.inline(URI, 6, 19).await;
    let item = only_item(&response).expect("a suggestion");
    let insert = item["insertText"].as_str().expect("insertText");
    assert!(insert.starts_with("x = load(\"data.txt\""), "{insert}");
    assert!(insert.len() > "x = load(\"data.txt\"".len());
    assert!(
        !insert.contains('\n'),
        "mid-line cursors get single-line suggestions"
    );
    assert_eq!(item["filterText"], item["insertText"]);
    assert_eq!(
        item["range"],
        json!({"start": {"line": 6, "character": 0}, "end": {"line": 6, "character": 19}})
    );

    let status = c.status().await;
    assert_eq!(status["documents"], 1);
    assert_eq!(status["counters"]["suggestions"], 1);
    let job = &status["lastJob"];
    assert!(job["nPrompt"].as_u64() > Some(20), "{status}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_gets_one_answer_each_and_only_the_last_a_suggestion() {
    let setup = ClientSetup {
        // Long enough that no request can finish its wait before the next one arrives, even on a
        // stalled CI machine; superseded requests answer at once, so only the last one waits.
        options: json!({"debounceMs": 2000, "precomputeNext": false}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    let mut waiting = Vec::new();
    for _ in 0..20 {
        let (_, rx) = c
            .request_later(
                "textDocument/inlineCompletion",
                TestClient::inline_params(URI, 6, 9, false),
            )
            .await;
        waiting.push(rx);
    }
    let mut results = Vec::new();
    for rx in waiting {
        results.push(wait(rx).await["result"].clone());
    }
    assert_eq!(results.len(), 20);
    assert!(results[..19].iter().all(Value::is_null), "{results:?}");
    assert!(
        only_item(&results[19]).is_some(),
        "the newest request is answered with a suggestion"
    );
    let status = c.status().await;
    assert_eq!(status["counters"]["requests"], 20);
    assert_eq!(status["counters"]["superseded"], 19);
    // Each request put its prompt into the cache at once (a prefill-only job); only the last
    // one generated. The prompt was evaluated once in all: the later prefills found it cached,
    // and the generating job found its logits there too.
    assert_eq!(
        status["engine"]["jobs"], 21,
        "20 prefills and one generation: {status}"
    );
    assert_eq!(
        status["engine"]["tokensEvaluated"], status["lastJob"]["nPrompt"],
        "{status}"
    );
    assert_eq!(status["lastJob"]["nEvaluated"], 0, "{status}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_is_answered_with_request_cancelled() {
    let setup = ClientSetup {
        options: json!({"debounceMs": 60000}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    let (id, rx) = c
        .request_later(
            "textDocument/inlineCompletion",
            TestClient::inline_params(URI, 6, 9, false),
        )
        .await;
    c.notify("$/cancelRequest", json!({"id": id})).await;
    let response = wait(rx).await;
    assert_eq!(response["error"]["code"], -32800, "{response}");
    // The server goes on serving.
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"debounceMs": 0}}),
    )
    .await;
    assert!(only_item(&c.inline(URI, 6, 9).await).is_some());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_through_a_suggestion_is_served_without_the_engine() {
    let setup = ClientSetup {
        options: json!({"precomputeNext": false}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    let first = c.inline(URI, 6, 9).await;
    let shown = suggested_after_line(&first);
    let typed: String = shown.chars().take(2).collect();
    let jobs_before = c.status().await["engine"]["jobs"].clone();

    c.change(URI, 2, [[6, 9], [6, 9]], &typed).await;
    let col = 9 + typed.encode_utf16().count() as u32;
    let second = c.inline(URI, 6, col).await;
    let item = only_item(&second).expect("served from the cache");
    assert_eq!(item["insertText"], format!("x = load({shown}"));
    assert_eq!(item["range"]["end"]["character"], col);
    let status = c.status().await;
    assert_eq!(status["counters"]["cacheHits"], 1);
    assert_eq!(status["engine"]["jobs"], jobs_before, "no engine call");

    // Typing something else misses the cache and asks the model again.
    c.change(URI, 3, [[6, col], [6, col]], "☃").await;
    c.inline(URI, 6, col + 1).await;
    assert_eq!(c.status().await["counters"]["cacheHits"], 1);
    c.shutdown().await;
}

/// A suggestion the confidence gate hid is shown once the user has typed two of its
/// characters, from the cache; one typed character is not enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_suggestion_is_shown_once_the_user_types_its_start() {
    let setup = ClientSetup {
        options: json!({"precomputeNext": false, "keepGenerating": false}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    // What the model writes here (greedy), with the gate off.
    c.open(URI, DOC).await;
    let writes = suggested_after_line(&c.inline(URI, 6, 9).await);
    assert!(writes.chars().count() > 3, "{writes}");
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"minConfidence": 0.999}}),
    )
    .await;
    c.open(URI2, DOC).await;
    assert!(only_item(&c.inline(URI2, 6, 9).await).is_none(), "hidden");
    assert_eq!(c.status().await["counters"]["unsure"], 1);

    let mut typed = writes.chars();
    let one = typed.next().unwrap().to_string();
    c.change(URI2, 2, [[6, 9], [6, 9]], &one).await;
    let col = 9 + one.encode_utf16().count() as u32;
    assert!(
        only_item(&c.inline(URI2, 6, col).await).is_none(),
        "one char"
    );
    let two = typed.next().unwrap().to_string();
    c.change(URI2, 3, [[6, col], [6, col]], &two).await;
    let col = col + two.encode_utf16().count() as u32;
    let jobs = c.status().await["engine"]["jobs"].clone();
    let item = only_item(&c.inline(URI2, 6, col).await).cloned();
    let item = item.expect("the hidden suggestion, revealed");
    assert_eq!(item["insertText"], format!("x = load({writes}"));
    let status = c.status().await;
    assert_eq!(status["counters"]["revealed"], 1, "{status}");
    assert_eq!(status["engine"]["jobs"], jobs, "no engine call");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suggestion_that_would_repeat_the_next_line_starts_otherwise() {
    let setup = ClientSetup {
        options: json!({"precomputeNext": false, "keepGenerating": false, "avoidNextLine": false}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    let writes = suggested_after_line(&c.inline(URI, 6, 9).await);
    let first = writes.lines().next().expect("a first line").trim_end();
    assert!(!first.trim().is_empty(), "{writes:?}");
    // The same code before the cursor, and the line the model writes already below it.
    let doc = format!("{DOC}\nx = load({first}\n");
    c.open(URI2, &doc).await;
    assert!(
        only_item(&c.inline(URI2, 6, 9).await).is_none(),
        "a repeat of the next line is dropped"
    );
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"avoidNextLine": true}}),
    )
    .await;
    let uri3 = "file:///work/demo3.py";
    c.open(uri3, &doc).await;
    let response = c.inline(uri3, 6, 9).await;
    let item = only_item(&response).expect("the model's other start");
    let text = item["insertText"].as_str().expect("text");
    let line = text.lines().next().expect("a line");
    assert!(
        line.starts_with("x = load(") && line.len() > "x = load(".len(),
        "{text:?}"
    );
    assert_ne!(line.trim_end(), format!("x = load({first}"));
    assert_eq!(c.status().await["engine"]["avoidedLines"], 1);
    c.shutdown().await;
}

/// Where the model's generation for a request is still running (or has just landed): a
/// second document with `DOC`'s text, its first request sent, and what that request's
/// generation writes (greedy: what the first document's request got). The engine's job count
/// is taken before that first request.
async fn in_flight(c: &mut TestClient) -> (String, u64, oneshot::Receiver<Value>) {
    c.open(URI, DOC).await;
    let writes = suggested_after_line(&c.inline(URI, 6, 9).await);
    c.open(URI2, DOC).await;
    let jobs = c.status().await["engine"]["jobs"].as_u64().expect("jobs");
    let (_, first) = c
        .request_later(
            "textDocument/inlineCompletion",
            TestClient::inline_params(URI2, 6, 9, false),
        )
        .await;
    let status = c.status_once("flights", 2).await;
    assert_eq!(status["counters"]["flights"], 2, "{status}");
    (writes, jobs, first)
}

const URI2: &str = "file:///work/demo2.py";

fn flight_setup() -> ClientSetup {
    ClientSetup {
        options: json!({"precomputeNext": false, "prefillOnOpen": false,
            "debounceMs": 0, "debounceMaxMs": 0}),
        ..ClientSetup::default()
    }
}

/// Typing what the model is writing waits for its generation (or finds it landed) instead of
/// cancelling it and asking the model again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_what_the_model_is_writing_keeps_its_generation() {
    let (mut c, _) = TestClient::start(flight_setup()).await;
    c.wait_model_ready().await;
    let (writes, jobs, first) = in_flight(&mut c).await;
    let typed: String = writes.chars().take(2).collect();
    c.change(URI2, 2, [[6, 9], [6, 9]], &typed).await;
    let col = 9 + typed.encode_utf16().count() as u32;
    let second = c.inline(URI2, 6, col).await;
    let item = only_item(&second).expect("the rest of the same suggestion");
    assert_eq!(item["insertText"], format!("x = load({writes}"));
    // Superseded (empty), or answered if the generation landed before the keystroke.
    let first = wait(first).await;
    assert!(first.get("error").is_none(), "{first}");
    let status = c.status().await;
    assert_eq!(
        status["engine"]["jobs"].as_u64(),
        Some(jobs + 2),
        "the first request's prefill and generation only: {status}"
    );
    let counters = &status["counters"];
    assert_eq!(
        counters["followed"].as_u64().unwrap() + counters["cacheHits"].as_u64().unwrap(),
        1,
        "{status}"
    );
    assert_eq!(counters["flights"], 2, "{status}");
    c.shutdown().await;
}

/// A keystroke that disagrees with the generation in flight asks the model itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_something_else_asks_the_model_again() {
    let (mut c, _) = TestClient::start(flight_setup()).await;
    c.wait_model_ready().await;
    let (_, jobs, first) = in_flight(&mut c).await;
    c.change(URI2, 2, [[6, 9], [6, 9]], "☃").await;
    let second = c.inline(URI2, 6, 10).await;
    if let Some(item) = only_item(&second) {
        assert!(item["insertText"]
            .as_str()
            .unwrap()
            .starts_with("x = load(☃"));
    }
    assert!(wait(first).await.get("error").is_none());
    let status = c.status().await;
    assert_eq!(
        status["engine"]["jobs"].as_u64(),
        Some(jobs + 4),
        "a prefill and a generation for each request: {status}"
    );
    assert_eq!(status["counters"]["followed"], 0, "{status}");
    assert_eq!(status["counters"]["flights"], 3, "{status}");
    c.shutdown().await;
}

/// The suggestion's insert text must start with exactly the text before the cursor: that
/// proves the position was converted in the negotiated encoding.
async fn check_position_encoding(utf8: bool) {
    let setup = ClientSetup {
        utf8,
        ..ClientSetup::default()
    };
    let (mut c, init) = TestClient::start(setup).await;
    assert_eq!(
        init["capabilities"]["positionEncoding"],
        if utf8 { "utf-8" } else { "utf-16" }
    );
    c.wait_model_ready().await;
    let line = "s = 'é😀漢' + f";
    c.open(URI, &format!("# ünïcödé\n{line}(x)\n")).await;
    let col = if utf8 {
        line.len()
    } else {
        line.encode_utf16().count()
    } as u32;
    let response = c.inline(URI, 1, col).await;
    let item = only_item(&response).expect("a suggestion");
    assert!(
        item["insertText"].as_str().expect("text").starts_with(line),
        "{item}"
    );
    assert_eq!(item["range"]["end"], json!({"line": 1, "character": col}));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf16_positions_with_non_ascii_text() {
    check_position_encoding(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_positions_when_the_client_offers_them() {
    check_position_encoding(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_apply_at_runtime() {
    let (mut c, _) = TestClient::start(ClientSetup::default()).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    c.inline(URI, 6, 9).await;
    assert!(c.status().await["lastJob"]["nGenerated"].as_u64() > Some(1));

    c.notify(
        "workspace/didChangeConfiguration",
        // Without token healing, whose first tokens re-create the text before the cursor
        // on top of the budget.
        json!({"settings": {"amdLsp": {"maxTokens": 1, "tokenHealing": false}}}),
    )
    .await;
    c.change(URI, 2, [[6, 9], [6, 9]], "p").await;
    // Each check asks the model (invoked requests skip the type-through cache, which could
    // otherwise serve the suggestion already on screen): a new job must have run.
    let jobs = |s: &Value| s["engine"]["jobs"].as_u64().expect("jobs");
    let before = jobs(&c.status().await);
    c.request(
        "textDocument/inlineCompletion",
        TestClient::inline_params(URI, 6, 10, true),
    )
    .await;
    let status = c.status().await;
    assert!(jobs(&status) > before, "{status}");
    assert!(
        status["lastJob"]["nGenerated"].as_u64() <= Some(1),
        "{status}"
    );

    // A bad key is reported in one message; every valid key next to it still applies.
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"maxTokens": 2, "tokenHealing": false, "maxTokenz": 9}}),
    )
    .await;
    let message = c.notification("window/showMessage").await;
    assert!(
        message["message"]
            .as_str()
            .expect("text")
            .contains("maxTokenz"),
        "{message}"
    );
    c.change(URI, 3, [[6, 10], [6, 10]], "a").await;
    let before = jobs(&c.status().await);
    c.request(
        "textDocument/inlineCompletion",
        TestClient::inline_params(URI, 6, 11, true),
    )
    .await;
    let status = c.status().await;
    assert!(jobs(&status) > before, "{status}");
    assert!(
        status["lastJob"]["nGenerated"].as_u64() <= Some(2),
        "{status}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popup_completion_for_clients_without_inline_support() {
    let setup = ClientSetup {
        inline: false,
        ..ClientSetup::default()
    };
    let (mut c, init) = TestClient::start(setup).await;
    assert!(init["capabilities"]["completionProvider"].is_object());
    assert!(init["capabilities"]
        .get("inlineCompletionProvider")
        .is_none());
    c.wait_model_ready().await;
    c.open(URI, "def load(path):\n    return open(pa").await;
    let list = c
        .request(
            "textDocument/completion",
            json!({"textDocument": {"uri": URI}, "position": {"line": 1, "character": 18}}),
        )
        .await;
    assert_eq!(list["isIncomplete"], true);
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{list}");
    let edit = &items[0]["textEdit"];
    assert_eq!(
        edit["range"]["start"],
        json!({"line": 1, "character": 16}),
        "replaces the word `pa`"
    );
    assert!(edit["newText"].as_str().expect("text").starts_with("pa"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_is_reported_once_and_completions_are_empty() {
    let setup = ClientSetup {
        model: None,
        options: json!({"model": "/nonexistent/model.gguf", "debounceMs": 0}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    let message = c.notification("window/showMessage").await;
    assert_eq!(message["type"], 1, "an error message");
    let text = message["message"].as_str().expect("text");
    assert!(
        text.contains("/nonexistent/model.gguf") && text.contains("does not exist"),
        "{text}"
    );
    c.open(URI, DOC).await;
    assert!(c.inline(URI, 6, 9).await.is_null());
    let status = c.status().await;
    assert_eq!(status["state"], "failed");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoked_completion_offers_several_distinct_candidates() {
    let setup = ClientSetup {
        options: json!({"debounceMs": 0, "inlineCandidates": 3}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    let response = c
        .request(
            "textDocument/inlineCompletion",
            TestClient::inline_params(URI, 6, 9, true),
        )
        .await;
    let items = response["items"].as_array().expect("items");
    assert!((2..=3).contains(&items.len()), "{response}");
    let texts: std::collections::HashSet<&str> = items
        .iter()
        .filter_map(|i| i["insertText"].as_str())
        .collect();
    assert_eq!(texts.len(), items.len(), "candidates are distinct");
    assert!(texts.iter().all(|t| t.starts_with("x = load(")));
    // A prefill, then one generation per candidate.
    assert_eq!(c.status().await["engine"]["jobs"], 4);
    // An automatic request gets one.
    c.change(URI, 2, [[6, 9], [6, 9]], "p").await;
    let response = c.inline(URI, 6, 10).await;
    assert_eq!(response["items"].as_array().map(Vec::len), Some(1));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_a_suggestion_is_followed_by_the_precomputed_next_one() {
    let (mut c, _) = TestClient::start(ClientSetup::default()).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    let first = c.inline(URI, 6, 9).await;
    let shown = suggested_after_line(&first);
    assert!(!shown.contains('\n'), "{shown:?}");
    // The next suggestion is computed in the background.
    let status = c.status_once("precomputed", 1).await;
    assert_eq!(status["counters"]["precomputed"], 1, "{status}");
    let jobs_before = status["engine"]["jobs"].clone();

    // Accept: the editor inserts the suggestion and asks again at the end of it.
    c.change(URI, 2, [[6, 9], [6, 9]], &shown).await;
    let col = 9 + shown.encode_utf16().count() as u32;
    let second = c.inline(URI, 6, col).await;
    let item = only_item(&second).expect("the precomputed suggestion");
    let text = item["insertText"].as_str().expect("text");
    assert!(
        text.starts_with(&format!("x = load({shown}")) && text.len() > 9 + shown.len(),
        "{text:?}"
    );
    let status = c.status().await;
    assert_eq!(status["counters"]["precomputedHits"], 1, "{status}");
    assert_eq!(status["engine"]["jobs"], jobs_before, "no engine call");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoked_while_a_suggestion_is_shown_asks_the_model() {
    // The type-through cache answers automatic requests; asking for alternatives must not get
    // the one suggestion already on screen back (found by the Neovim plugin's cycle key).
    let setup = ClientSetup {
        options: json!({"debounceMs": 0, "inlineCandidates": 3}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    let shown = c.inline(URI, 6, 9).await;
    assert_eq!(shown["items"].as_array().map(Vec::len), Some(1), "{shown}");
    let response = c
        .request(
            "textDocument/inlineCompletion",
            TestClient::inline_params(URI, 6, 9, true),
        )
        .await;
    let items = response["items"].as_array().expect("items");
    assert!((2..=3).contains(&items.len()), "{response}");
    assert_eq!(c.status().await["counters"]["cacheHits"], 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selected_popup_item_is_extended() {
    let (mut c, _) = TestClient::start(ClientSetup::default()).await;
    c.wait_model_ready().await;
    c.open(URI, "import os\nos.pa").await;
    let params = json!({
        "textDocument": {"uri": URI},
        "position": {"line": 1, "character": 5},
        "context": {"triggerKind": 2, "selectedCompletionInfo": {
            "range": {"start": {"line": 1, "character": 3}, "end": {"line": 1, "character": 5}},
            "text": "path",
        }},
    });
    let response = c.request("textDocument/inlineCompletion", params).await;
    let item = only_item(&response).expect("a suggestion");
    let insert = item["insertText"].as_str().expect("text");
    assert!(
        insert.starts_with("os.path") && insert.len() > "os.path".len(),
        "{insert}"
    );
    assert_eq!(item["range"]["end"], json!({"line": 1, "character": 5}));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_with_fim_tokens_get_fill_in_the_middle_prompts() {
    let setup = ClientSetup {
        model: Some(support::tiny_fim_model()),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    assert_eq!(c.status().await["model"]["fim"], true);
    // The suffix is part of the prompt: the same prefix with a different suffix is a
    // different prompt, so the KV cache keeps only the part before the suffix.
    c.open(URI, "def add(a, b):\n    return \n\nprint(add(1, 2))\n")
        .await;
    let first = c.inline(URI, 1, 11).await;
    let n_prompt = c.status().await["lastJob"]["nPrompt"]
        .as_u64()
        .expect("nPrompt");
    assert!(only_item(&first).is_some() || first.is_null());
    c.change(URI, 2, [[3, 0], [3, 0]], "# more code after the cursor\n")
        .await;
    c.inline(URI, 1, 11).await;
    let status = c.status().await;
    let job = &status["lastJob"];
    assert!(
        job["nPrompt"].as_u64().expect("nPrompt") > n_prompt,
        "the suffix grew the prompt: {status}"
    );
    assert!(job["nReused"].as_u64() > Some(5), "{job}");
    c.shutdown().await;
}

/// With a `targetModel`, multi-line completions come from the target with the main model
/// drafting; the suggestion is the one the target gives alone, and `useTarget: never` keeps
/// everything on the main model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_model_serves_multi_line_completions_with_speculation() {
    let target = support::stacked_target();
    let options = |speculation: &str, use_target: &str| {
        json!({
            "debounceMs": 0,
            "multiLine": "always",
            "maxTokens": 24,
            "targetModel": target,
            "speculation": speculation,
            "useTarget": use_target,
        })
    };
    let setup = ClientSetup {
        options: options("model", "auto"),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    let status = c.status().await;
    assert_eq!(status["targetModel"]["fim"], true, "{status}");
    // One document per phase: the type-through cache is per document.
    let text = "import os\n\ndef walk(root):\n    ";
    let uris = ["file:///w/a.py", "file:///w/b.py", "file:///w/c.py"];
    for uri in uris {
        c.open(uri, text).await;
    }
    let fast = c.inline(uris[0], 3, 4).await;
    let job = c.status().await["lastJob"].clone();
    assert!(job["nDrafted"].as_u64() > Some(0), "drafted: {job}");
    assert!(job["nTargetCalls"].as_u64() > Some(0), "{job}");

    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": options("off", "auto")}),
    )
    .await;
    let plain = c.inline(uris[1], 3, 4).await;
    let job = c.status().await["lastJob"].clone();
    assert_eq!(job["nDrafted"], 0, "{job}");
    assert_eq!(fast, plain, "speculation changed the suggestion");

    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": options("model", "never")}),
    )
    .await;
    c.inline(uris[2], 3, 4).await;
    let job = c.status().await["lastJob"].clone();
    assert_eq!(job["nDrafted"], 0, "the main model alone: {job}");
    c.shutdown().await;
}

/// A document that fits the prompt window (`windowMaxChars`, 4096 by default).
const SMALL_DOC: &str = "import json\nimport os\n\n\nclass Store:\n    \"\"\"Keeps records in a JSON file.\"\"\"\n\n    def __init__(self, path):\n        self.path = path\n        self.records = {}\n\n    def load(self):\n        if os.path.exists(self.path):\n            with open(self.path) as f:\n                self.records = json.load(f)\n        return self.records\n\n    def save(self):\n        with open(self.path, \"w\") as f:\n            json.dump(self.records, f, indent=2)\n\n    def put(self, key, value):\n        self.records[key] = value\n        self.save()\n\n    def get(self, key, default=None):\n        return self.records.get(key, default)\n\n\ndef main():\n    store = Store(\"data.json\")\n    store.load()\n    store.put(\"answer\", 42)\n    print(store.get(\"answer\"))\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_document_is_evaluated_when_opened_so_the_first_keystroke_anywhere_is_warm() {
    let mut runs = Vec::new();
    for prefill in [true, false] {
        let setup = ClientSetup {
            options: json!({"debounceMs": 0, "prefillOnOpen": prefill}),
            ..ClientSetup::default()
        };
        let (mut c, _) = TestClient::start(setup).await;
        c.wait_model_ready().await;
        c.open(URI, SMALL_DOC).await;
        let status = if prefill {
            let status = c.status_once("openPrefills", 1).await;
            assert_eq!(status["counters"]["openPrefills"], 1, "{status}");
            status
        } else {
            // Past the delay a prefill would wait for: nothing was asked of the engine.
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
            let status = c.status().await;
            assert_eq!(status["engine"]["jobs"], 0, "{status}");
            status
        };
        let before = status["engine"]["tokensEvaluated"].as_u64().expect("count");
        // The first keystroke lands in the middle of the file: `self.records[key] = value`.
        c.change(URI, 2, [[22, 33], [22, 33]], "\n        ").await;
        let response = c.inline(URI, 23, 8).await;
        let status = c.status().await;
        let evaluated = status["engine"]["tokensEvaluated"].as_u64().expect("count") - before;
        runs.push((evaluated, status["lastJob"]["nPrompt"].clone(), response));
        c.shutdown().await;
    }
    let (warm, n_prompt, warm_answer) = &runs[0];
    let (cold, _, cold_answer) = &runs[1];
    let n_prompt = n_prompt.as_u64().expect("prompt tokens");
    assert!(
        n_prompt > 150,
        "the prompt holds the file up to the cursor: {n_prompt}"
    );
    assert_eq!(*cold, n_prompt, "without it, the whole prompt is evaluated");
    assert!(
        *warm <= 4,
        "opened warm, only the tokens at the edit are evaluated: {warm} of {n_prompt}"
    );
    assert_eq!(warm_answer, cold_answer, "the same suggestion either way");
}

/// A change that arrives while a request is being computed (a paste, an undo, a popup client
/// typing on) makes that request answer empty: its range and text were made for the old line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_while_a_request_is_computed_empties_its_answer() {
    let setup = ClientSetup {
        // The debounce holds the request long enough for the change to arrive first.
        options: json!({"debounceMs": 300, "debounceMaxMs": 300}),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    c.open(URI, DOC).await;
    let (_, answer) = c
        .request_later(
            "textDocument/inlineCompletion",
            TestClient::inline_params(URI, 6, 9, false),
        )
        .await;
    c.change(URI, 2, [[0, 0], [0, 0]], "# pasted\n").await;
    let answer = wait(answer).await;
    assert!(answer.get("error").is_none(), "{answer}");
    assert!(answer["result"].is_null(), "{answer}");
    // The next request, made for the text as it is, is answered.
    let fresh = c.inline(URI, 7, 9).await;
    assert!(
        fresh["items"].as_array().is_some_and(|i| !i.is_empty()),
        "{fresh}"
    );
    c.shutdown().await;
}

/// While the model loads, completions are answered empty at once; the first request after the
/// model is ready is served (no second keystroke needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_after_loading_is_served() {
    let (mut c, _) = TestClient::start(ClientSetup::default()).await;
    c.open(URI, DOC).await;
    // Loading (empty at once) or, on a fast machine, already ready (a suggestion).
    let early = c.inline(URI, 6, 9).await;
    assert!(early.is_null() || early["items"].is_array(), "{early}");
    c.wait_model_ready().await;
    c.change(URI, 2, [[6, 9], [6, 9]], "p").await;
    let first = c.inline(URI, 6, 10).await;
    assert!(
        first["items"].as_array().is_some_and(|i| !i.is_empty()),
        "{first}"
    );
    c.shutdown().await;
}

/// Context from other files: the workspace's file that defines the names around the cursor
/// goes into the prompt (shown in `amd/status`), a document open from outside the workspace
/// does not, and typing on the line keeps the chunks and their KV cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_comes_from_the_workspace_and_stays_cached_while_typing() {
    let base = std::env::temp_dir().join(format!("amd-lsp-e2e-context-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (ws, outside) = (base.join("ws"), base.join("outside"));
    std::fs::create_dir_all(ws.join("pkg")).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(
        ws.join("pkg/util.py"),
        "import os\n\n\ndef parse_config(path, strict=False):\n    return {}\n",
    )
    .expect("write");
    let app =
        "from pkg.util import parse_config\n\n\ndef main():\n    cfg = parse_config('a')\n    ";
    std::fs::write(ws.join("app.py"), app).expect("write");
    let stray = "def parse_config(path):\n    return None\n";
    std::fs::write(outside.join("stray.py"), stray).expect("write");

    let setup = ClientSetup {
        options: json!({"debounceMs": 0, "precomputeNext": false, "context": true, "contextMaxTokens": 256}),
        root: Some(ws.clone()),
        ..ClientSetup::default()
    };
    let (mut c, _) = TestClient::start(setup).await;
    c.wait_model_ready().await;
    let mut status = c.status().await;
    for _ in 0..400 {
        if status["context"]["indexed"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        status = c.status().await;
    }
    assert_eq!(status["context"]["index"]["files"], 2, "{status}");
    c.open(&file_uri(&outside.join("stray.py")), stray).await;
    let uri = file_uri(&ws.join("app.py"));
    c.open(&uri, app).await;
    c.inline(&uri, 5, 4).await;
    let status = c.status().await;
    // First the outline of what app.py uses from pkg/util.py (`contextDefinitions`): the
    // line defining `parse_config`; then the ranked chunk.
    let chosen = json!(["pkg/util.py:4", "pkg/util.py:1-5"]);
    assert_eq!(status["context"]["lastUsed"], chosen, "{status}");
    let n_prompt = status["lastJob"]["nPrompt"].as_u64().expect("a job");
    for (i, typed) in ["r", "e", "t"].into_iter().enumerate() {
        let col = 4 + i as u32;
        c.change(&uri, 2 + i as i32, [[5, col], [5, col]], typed)
            .await;
        c.inline(&uri, 5, col + 1).await;
        let status = c.status().await;
        assert_eq!(status["context"]["lastUsed"], chosen);
        assert!(
            status["lastJob"]["nEvaluated"].as_u64() <= Some(3),
            "keystroke {i}: {}",
            status["lastJob"]
        );
    }
    // Off: no chunks, a shorter prompt.
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"context": false, "debounceMs": 0, "precomputeNext": false}}),
    )
    .await;
    c.change(&uri, 5, [[5, 7], [5, 7]], "u").await;
    c.inline(&uri, 5, 8).await;
    let status = c.status().await;
    assert_eq!(status["context"]["lastUsed"], json!([]), "{status}");
    // Turned off, the index is let go.
    assert_eq!(status["context"]["indexed"], false, "{status}");
    assert!(
        status["lastJob"]["nPrompt"].as_u64() < Some(n_prompt),
        "{status}"
    );
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&base);
}
