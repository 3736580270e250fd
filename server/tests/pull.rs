//! `amd-lsp model pull` against a local HTTP server that serves the hub's URL layout and
//! headers: a full download, an interrupted one that resumes, a corrupted file that is
//! rejected and not left in the cache, offline mode that uses the cache without a network, and a
//! ready GGUF file pulled as it is (`--file`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_amd-lsp");
const REPO: &str = "amd/AMD-Llama-135m-code";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const LFS: [&str; 2] = ["model.safetensors", "tokenizer.model"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The first full download of model.safetensors stops halfway.
    TruncateOnce,
    /// model.safetensors arrives with one byte changed.
    Corrupt,
}

struct Hub {
    repo: String,
    files: Vec<(String, Vec<u8>)>,
    fault: Fault,
    truncated: bool,
    /// "GET path range" of every request.
    log: Vec<String>,
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hub serving the tiny checkpoint as `REPO`.
fn start_hub(fault: Fault) -> (String, Arc<Mutex<Hub>>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-llama-hf");
    let files = [
        "config.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "model.safetensors",
    ]
    .iter()
    .map(|f| {
        (
            (*f).to_owned(),
            std::fs::read(dir.join(f)).expect("fixture"),
        )
    })
    .collect();
    start_hub_with(REPO, files, fault)
}

/// The hub serving `files` as `repo`.
fn start_hub_with(
    repo: &str,
    files: Vec<(String, Vec<u8>)>,
    fault: Fault,
) -> (String, Arc<Mutex<Hub>>) {
    let hub = Arc::new(Mutex::new(Hub {
        repo: repo.to_owned(),
        files,
        fault,
        truncated: false,
        log: Vec::new(),
    }));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let state = Arc::clone(&hub);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = handle(stream, &state);
        }
    });
    (url, hub)
}

fn handle(mut stream: TcpStream, hub: &Mutex<Hub>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_owned());
            }
        }
    }
    let mut hub = hub.lock().expect("lock");
    hub.log
        .push(format!("GET {path} {}", range.clone().unwrap_or_default()));
    let repo = hub.repo.clone();
    if path == format!("/api/models/{repo}/revision/main") {
        let siblings: Vec<String> = hub
            .files
            .iter()
            .map(|(n, _)| format!("{{\"rfilename\":\"{n}\"}}"))
            .collect();
        let body = format!(
            "{{\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        return respond(
            &mut stream,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }
    let Some(file) = path.strip_prefix(&format!("/{repo}/resolve/main/")) else {
        return respond(&mut stream, "404 Not Found", &[], b"not found");
    };
    let Some((_, data)) = hub.files.iter().find(|(n, _)| n == file).cloned() else {
        return respond(&mut stream, "404 Not Found", &[], b"no such file");
    };
    let etag = sha256(&data);
    let mut body = data.clone();
    if hub.fault == Fault::Corrupt && (file == "model.safetensors" || file.ends_with(".gguf")) {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = if b.is_empty() {
                body.len() - 1
            } else {
                b.parse().unwrap_or(body.len() - 1)
            };
            (a, b.min(body.len() - 1))
        }
        None => (0, body.len() - 1),
    };
    let mut headers = vec![
        ("x-repo-commit", COMMIT.to_owned()),
        (
            "Content-Range",
            format!("bytes {start}-{end}/{}", body.len()),
        ),
    ];
    if LFS.contains(&file) || file.ends_with(".gguf") {
        headers.push(("x-linked-etag", format!("\"{etag}\"")));
        headers.push(("etag", "\"pointer-sha1\"".to_owned()));
    } else {
        headers.push(("etag", format!("\"{}\"", &etag[..40])));
    }
    let slice = &body[start..=end];
    let truncate = hub.fault == Fault::TruncateOnce
        && !hub.truncated
        && file == "model.safetensors"
        && slice.len() > 1;
    if truncate {
        hub.truncated = true;
        let head = head("206 Partial Content", &headers, slice.len());
        stream.write_all(head.as_bytes())?;
        stream.write_all(&slice[..slice.len() / 2])?;
        return stream.flush();
    }
    respond(&mut stream, "206 Partial Content", &headers, slice)
}

fn head(status: &str, headers: &[(&str, String)], n_body: usize) -> String {
    let mut h = format!("HTTP/1.1 {status}\r\nContent-Length: {n_body}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    stream.write_all(head(status, headers, body.len()).as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn new(name: &str) -> Dirs {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pull-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("dir");
        Dirs { root }
    }

    fn pull(&self, endpoint: &str, offline: bool) -> Output {
        self.pull_with(&["--type", "f16"], endpoint, offline)
    }

    /// `amd-lsp model pull ARGS…` with this directory's caches and `endpoint` as the hub.
    fn pull_with(&self, args: &[&str], endpoint: &str, offline: bool) -> Output {
        let mut c = Command::new(BIN);
        c.args(["model", "pull"])
            .args(args)
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", self.root.join("hf"))
            .env("AMD_LSP_CACHE", self.root.join("cache"))
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_TOKEN");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        } else {
            c.env_remove("HF_HUB_OFFLINE");
        }
        c.output().expect("run amd-lsp model pull")
    }

    fn gguf(&self) -> PathBuf {
        self.root
            .join("cache/models/amd--AMD-Llama-135m-code/f16.gguf")
    }

    fn blob(&self, data: &[u8]) -> PathBuf {
        self.root
            .join("hf/hub/models--amd--AMD-Llama-135m-code/blobs")
            .join(sha256(data))
    }
}

fn weights() -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny-llama-hf/model.safetensors"),
    )
    .expect("weights")
}

#[test]
fn pulls_verifies_converts_and_then_works_offline() {
    let (endpoint, hub) = start_hub(Fault::None);
    let dirs = Dirs::new("full");
    let out = dirs.pull(&endpoint, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        dirs.gguf().display().to_string()
    );
    assert!(dirs.gguf().is_file());
    assert!(
        dirs.blob(&weights()).is_file(),
        "the checkpoint is in the Hugging Face cache"
    );
    assert!(hub
        .lock()
        .expect("lock")
        .log
        .iter()
        .any(|l| l.contains("/resolve/main/model.safetensors")));

    // Offline: the cache is used and nothing is asked of the network (a closed port).
    std::fs::remove_file(dirs.gguf()).expect("remove");
    let out = dirs.pull("http://127.0.0.1:9", true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dirs.gguf().is_file());

    // Offline with an empty cache: a clear error.
    let empty = Dirs::new("offline-empty");
    let out = empty.pull("http://127.0.0.1:9", true);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HF_HUB_OFFLINE is set"));
}

#[test]
fn an_interrupted_download_resumes() {
    let (endpoint, hub) = start_hub(Fault::TruncateOnce);
    let dirs = Dirs::new("resume");
    let first = dirs.pull(&endpoint, false);
    assert!(!first.status.success(), "the connection was cut");
    assert!(!dirs.gguf().exists());
    let second = dirs.pull(&endpoint, false);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(dirs.gguf().is_file());
    let half = weights().len() / 2;
    let log = hub.lock().expect("lock").log.clone();
    assert!(
        log.iter()
            .any(|l| l.ends_with(&format!("model.safetensors bytes={half}-"))),
        "the second run asked for the rest only: {log:?}"
    );
}

#[test]
fn a_corrupted_file_is_rejected_and_not_kept() {
    let (endpoint, _hub) = start_hub(Fault::Corrupt);
    let dirs = Dirs::new("corrupt");
    let out = dirs.pull(&endpoint, false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sha256") && stderr.contains("discarded"),
        "{stderr}"
    );
    assert!(!dirs.blob(&weights()).exists(), "the bad blob is gone");
    let snapshot = dirs.root.join(format!(
        "hf/hub/models--amd--AMD-Llama-135m-code/snapshots/{COMMIT}/model.safetensors"
    ));
    assert!(!snapshot.exists());
    assert!(!dirs.gguf().exists());
}

const GGUF_REPO: &str = "someone/Tiny-Code-GGUF";
const GGUF_FILE: &str = "tiny-code-q8_0.gguf";

/// A GGUF repository holding the tiny test model and a README.
fn start_gguf_hub(fault: Fault) -> (String, Arc<Mutex<Hub>>, Vec<u8>) {
    let model = amd_engine::testing::testmodel::cached_tiny_model(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        false,
    )
    .expect("tiny model");
    let data = std::fs::read(model).expect("read");
    let files = vec![
        (GGUF_FILE.to_owned(), data.clone()),
        ("README.md".to_owned(), b"# tiny\n".to_vec()),
        // Intact as uploaded (its sha256 matches) but cut short: not a model.
        ("half.gguf".to_owned(), data[..data.len() / 2].to_vec()),
    ];
    let (url, hub) = start_hub_with(GGUF_REPO, files, fault);
    (url, hub, data)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_ready_gguf_is_pulled_as_it_is_and_then_works_offline() {
    let (endpoint, _hub, data) = start_gguf_hub(Fault::None);
    let dirs = Dirs::new("gguf");
    let args = [GGUF_REPO, "--file", GGUF_FILE];
    let out = dirs.pull_with(&args, &endpoint, false);
    assert!(out.status.success(), "{}", stderr(&out));
    let cached = dirs
        .root
        .join("cache/models/someone--Tiny-Code-GGUF")
        .join(GGUF_FILE);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        cached.display().to_string()
    );
    assert!(
        std::fs::read(&cached).expect("cached") == data,
        "byte for byte"
    );

    // The pulled file is a model the server completes with.
    let complete = Command::new(BIN)
        .args([
            "complete",
            "--max-tokens",
            "4",
            "--prompt",
            "def f(a):",
            "--model",
        ])
        .arg(&cached)
        .output()
        .expect("run complete");
    assert!(complete.status.success(), "{}", stderr(&complete));

    // Offline: taken from the Hugging Face cache, nothing asked of the network.
    std::fs::remove_file(&cached).expect("remove");
    let out = dirs.pull_with(&args, "http://127.0.0.1:9", true);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(&cached).expect("cached") == data);
}

#[test]
fn a_gguf_that_is_not_there_or_corrupted_is_refused() {
    let (endpoint, _hub, _) = start_gguf_hub(Fault::None);
    let dirs = Dirs::new("gguf-absent");
    let out = dirs.pull_with(&[GGUF_REPO, "--file", "other.gguf"], &endpoint, false);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("its GGUF files: {GGUF_FILE}")),
        "{}",
        stderr(&out)
    );
    for bad in ["../escape.gguf", "README.md", ".gguf"] {
        let out = dirs.pull_with(&[GGUF_REPO, "--file", bad], &endpoint, false);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("is not the name of a GGUF file"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    let out = dirs.pull_with(
        &[GGUF_REPO, "--file", GGUF_FILE, "--type", "f16"],
        &endpoint,
        false,
    );
    assert!(
        !out.status.success(),
        "--file takes the GGUF as it is: no --type"
    );
    let out = dirs.pull_with(&[GGUF_REPO, "--file", "half.gguf"], &endpoint, false);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("half.gguf is not a usable model"),
        "{}",
        stderr(&out)
    );
    assert!(!dirs
        .root
        .join("cache/models/someone--Tiny-Code-GGUF/half.gguf")
        .exists());

    let (endpoint, _hub, _) = start_gguf_hub(Fault::Corrupt);
    let dirs = Dirs::new("gguf-corrupt");
    let out = dirs.pull_with(&[GGUF_REPO, "--file", GGUF_FILE], &endpoint, false);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not match the hub's"),
        "{}",
        stderr(&out)
    );
    assert!(!dirs
        .root
        .join("cache/models/someone--Tiny-Code-GGUF")
        .join(GGUF_FILE)
        .exists());
}
