//! HumanEval problems and the pass@1 check: a completion passes when the problem's prompt,
//! the completion and its tests run in a Python subprocess without error, within a timeout,
//! with sockets disabled.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One problem of HumanEval.jsonl(.gz).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Task {
    pub(crate) task_id: String,
    pub(crate) prompt: String,
    pub(crate) test: String,
    pub(crate) entry_point: String,
    #[serde(default)]
    pub(crate) canonical_solution: Option<String>,
}

/// Where a HumanEval completion ends (the stop sequences of the HumanEval paper's evaluation).
pub(crate) const STOP: [&str; 6] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint", "\n```"];

/// Reads problems from a `.jsonl` file, gzip-compressed or not.
pub(crate) fn load(path: &Path) -> Result<Vec<Task>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let gz = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let text: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut tasks = Vec::new();
    for (i, line) in BufReader::new(text).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let task: Task = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a HumanEval problem", path.display(), i + 1))?;
        tasks.push(task);
    }
    if tasks.is_empty() {
        bail!("{} holds no problems", path.display());
    }
    Ok(tasks)
}

/// Python run before the program: no network for generated code.
const NO_NETWORK: &str = "import socket as _s\n\
def _no_network(*a, **k):\n    raise OSError('network access is disabled in amd-lsp bench')\n\
_s.socket = _no_network\n_s.create_connection = _no_network\n_s.getaddrinfo = _no_network\n\
del _s\n";

/// Runs the problem's tests on `completion`; `true` when they pass within `timeout`.
pub(crate) fn passes(task: &Task, completion: &str, timeout: Duration) -> Result<bool> {
    // One directory per run: the same problem may be checked by several threads at once.
    static N_RUNS: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "amd-lsp-humaneval-{}-{}-{}",
        std::process::id(),
        N_RUNS.fetch_add(1, Ordering::Relaxed),
        task.task_id
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let program = format!(
        "{NO_NETWORK}{}{}\n\n{}\n\ncheck({})\n",
        task.prompt, completion, task.test, task.entry_point
    );
    let file = dir.join("program.py");
    std::fs::write(&file, program).with_context(|| format!("writing {}", file.display()))?;
    let result = run_python(&dir, &file, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_python(dir: &Path, file: &Path, timeout: Duration) -> Result<bool> {
    let mut child = Command::new("python3")
        .arg("-I")
        .arg(file)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run python3 (needed for pass@1)")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Cuts a completion at the first stop sequence.
pub(crate) fn truncate_at_stop(text: &str) -> &str {
    let end = STOP
        .iter()
        .filter_map(|s| text.find(s))
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<Task> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/humaneval/HumanEval.jsonl.gz");
        load(&path).expect("HumanEval fixture")
    }

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn all_164_problems_load_and_canonical_solutions_pass() {
        let tasks = fixture();
        assert_eq!(tasks.len(), 164);
        assert_eq!(tasks[0].task_id, "HumanEval/0");
        // Every 20th problem keeps the test quick.
        for task in tasks.iter().step_by(20) {
            let solution = task.canonical_solution.as_deref().expect("solution");
            assert!(
                passes(task, solution, TIMEOUT).expect("python"),
                "{}",
                task.task_id
            );
        }
    }

    #[test]
    fn wrong_hanging_and_networked_completions_fail() {
        let task = &fixture()[0];
        assert!(!passes(task, "    return False\n", TIMEOUT).expect("python"));
        assert!(!passes(task, "", TIMEOUT).expect("python"));
        let hang = "    while True:\n        pass\n";
        assert!(!passes(task, hang, Duration::from_millis(500)).expect("python"));
        // Right answer, but it first needs the network: refused.
        let net = format!(
            "    import socket\n    socket.create_connection(('127.0.0.1', 9))\n{}",
            task.canonical_solution.as_deref().expect("solution")
        );
        assert!(!passes(task, &net, TIMEOUT).expect("python"));
    }

    #[test]
    fn completions_stop_where_humaneval_stops_them() {
        assert_eq!(
            truncate_at_stop("    return 1\n\ndef other():"),
            "    return 1\n"
        );
        assert_eq!(truncate_at_stop("    x = 1\n# note"), "    x = 1");
        assert_eq!(truncate_at_stop("    return 2"), "    return 2");
    }
}
