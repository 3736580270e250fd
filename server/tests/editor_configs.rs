//! The editor set-ups in editors/ that no editor here can run (Helix is not packaged for this
//! machine's Debian) are exercised against the real binary the way their editor uses them.

mod stdio;

use std::process::{Command, Stdio};

use serde_json::{json, Value};

use stdio::{tiny_model, StdioServer, BIN};

/// Helix: editors/helix/languages.toml's server entry, its `config` as initializationOptions
/// and again as settings (Helix sends both), Helix's capabilities (no inline completion), and
/// the completion popup path it uses.
#[test]
fn helix_languages_toml_gets_popup_completions() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../editors/helix/languages.toml"
    ))
    .expect("editors/helix/languages.toml");
    let toml: toml::Table = toml::from_str(&text).expect("languages.toml parses");
    let entry = &toml["language-server"]["amd-lsp"];
    assert_eq!(entry["command"].as_str(), Some("amd-lsp"));
    let args: Vec<&str> = entry["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    let mut config: Value = serde_json::to_value(&entry["config"]).expect("config as JSON");
    config["model"] = json!(tiny_model());
    config["debounceMs"] = json!(0);
    let languages = toml["language"].as_array().expect("[[language]]");
    assert!(languages.iter().all(|l| l["language-servers"]
        .as_array()
        .is_some_and(|s| s.iter().any(|n| n.as_str() == Some("amd-lsp")))));

    let mut server = StdioServer::spawn(Command::new(BIN).args(&args), Stdio::null());
    let init = server.request(
        "initialize",
        json!({
            "processId": std::process::id(),
            "capabilities": {
                "general": {"positionEncodings": ["utf-8", "utf-32", "utf-16"]},
                "textDocument": {"completion": {
                    "completionItem": {"snippetSupport": true, "insertReplaceSupport": true},
                    "completionItemKind": {},
                }},
            },
            "initializationOptions": config,
        }),
    );
    let caps = &init["result"]["capabilities"];
    assert!(caps["completionProvider"].is_object(), "{init}");
    assert!(caps.get("inlineCompletionProvider").is_none(), "{init}");
    assert_eq!(caps["positionEncoding"], "utf-8");
    server.notify("initialized", json!({}));
    server.notify(
        "workspace/didChangeConfiguration",
        json!({ "settings": config }),
    );
    let text = "import os\n\n\ndef load(path):\n    return open(pa";
    server.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": "file:///w/main.py", "languageId": "python", "version": 0, "text": text}}),
    );
    let status = server.settled_status();
    assert_eq!(status["state"], "ready", "{status}");
    assert_eq!(status["model"]["path"], json!(tiny_model()));
    let res = server.request(
        "textDocument/completion",
        json!({
            "textDocument": {"uri": "file:///w/main.py"},
            "position": {"line": 4, "character": 18},
            "context": {"triggerKind": 1},
        }),
    );
    let items = res["result"]["items"]
        .as_array()
        .expect("a completion list");
    assert_eq!(items.len(), 1, "{res}");
    let edit = &items[0]["textEdit"];
    assert_eq!(edit["range"]["start"], json!({"line": 4, "character": 16}));
    assert_eq!(edit["range"]["end"], json!({"line": 4, "character": 18}));
    let new_text = edit["newText"].as_str().expect("newText");
    assert!(new_text.starts_with("pa") && new_text.len() > 2, "{res}");
    server.shutdown();
}
