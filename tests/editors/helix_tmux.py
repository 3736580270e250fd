#!/usr/bin/env python3
"""Drives a real Helix (hx) against amd-lsp inside tmux, with a real model.

usage: helix_tmux.py HX RUNTIME AMD_LSP MODEL OTHER_MODEL WORKDIR

Helix has no inline completion: amd-lsp's suggestion is an item of its completion popup. Keys
go in with `tmux send-keys`; what Helix and the server said to each other is read from Helix's
own log (`hx -vv` logs every LSP message); what a key did to the file is read from the file
after `:w`. Each check raises with what was seen instead.
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

HX, RUNTIME, SERVER, MODEL, OTHER_MODEL, WORK = sys.argv[1:7]
SESSION = "amd-lsp-helix"
LOG = os.path.join(WORK, "cache", "helix", "helix.log")
CONFIG_DIR = os.path.join(WORK, "config", "helix")
FILE = os.path.join(WORK, "project", "app.py")
LINES = os.path.join(WORK, "project", "lines.py")
LINES_TEXT = "import os\n\n\ndef count_lines(path):\n    "
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEXT = (
    "import os\n"
    "\n"
    "\n"
    "def read_config(path):\n"
    '    """Read the configuration file at path."""\n'
    "    with open(path) as file:\n"
    "        return file.read()\n"
    "\n"
    "\n"
    "def write_config(path, text):\n"
    "    \n"
)


def write_languages(settings):
    """editors/helix/languages.toml with this machine's paths and the test's settings."""
    shipped = open(os.path.join(REPO, "editors", "helix", "languages.toml")).read()
    text = shipped.replace('command = "amd-lsp"', f"command = {json.dumps(SERVER)}")
    text = re.sub(r"^config = .*$", "config = " + toml_inline(settings), text, flags=re.M)
    # Only amd-lsp: the language's own servers are not installed here.
    text = re.sub(r'language-servers = \["[^"]+", "amd-lsp"\]', 'language-servers = ["amd-lsp"]', text)
    assert f"command = {json.dumps(SERVER)}" in text and "config = {" in text, text
    with open(os.path.join(CONFIG_DIR, "languages.toml"), "w") as f:
        f.write(text)


def toml_inline(settings):
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in settings.items()) + " }"


def tmux(*args):
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def keys(*names):
    """Named keys (Enter, Escape, Tab, C-x) or ':commands' with Enter."""
    for k in names:
        tmux("send-keys", "-t", SESSION, k)
        time.sleep(0.15)


def type_text(text):
    tmux("send-keys", "-t", SESSION, "-l", text)


def pane():
    return tmux("capture-pane", "-p", "-t", SESSION)


def messages():
    """Every LSP message in Helix's log, in order: (direction, message); '->' is to the server."""
    out = []
    if not os.path.exists(LOG):
        return out
    for line in open(LOG, errors="replace"):
        m = re.search(r"helix_lsp::transport \[INFO\] amd-lsp (->|<-) (\{.*\})\s*$", line)
        if m:
            try:
                out.append((m.group(1), json.loads(m.group(2))))
            except json.JSONDecodeError:
                pass
    return out


def wait(what, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n--- pane ---\n{pane()}")


def completions():
    """[request, response or None] for every textDocument/completion, in order. Ids restart
    with each server process, so a response answers the latest request with its id."""
    out, pending = [], {}
    for d, m in messages():
        if d == "->" and m.get("method") == "textDocument/completion":
            pending[m["id"]] = len(out)
            out.append([m, None])
        elif d == "<-" and "id" in m and "method" not in m and m["id"] in pending:
            out[pending.pop(m["id"])][1] = m
    return out


def loads():
    """Messages of every model load the server reported (its `$/progress` begin)."""
    return [
        m["params"]["value"].get("message", "")
        for d, m in messages()
        if d == "<-" and m.get("method") == "$/progress" and m["params"]["value"].get("kind") == "begin"
        and "load" in str(m["params"].get("token"))
    ]


def load_ended(n):
    ends = [
        m for d, m in messages()
        if d == "<-" and m.get("method") == "$/progress" and m["params"]["value"].get("kind") == "end"
        and "load" in str(m["params"].get("token"))
    ]
    return len(ends) >= n


def answered_item(after):
    """The first amd-lsp item answered to a completion request made after `after` requests."""
    for req, resp in completions()[after:]:
        items = (resp or {}).get("result") or {}
        items = items.get("items", []) if isinstance(items, dict) else items
        if items:
            return req, items[0]
    return None


def saved():
    return saved_as(FILE)


def saved_as(path):
    keys("Escape", "Escape", ":w", "Enter")
    time.sleep(0.5)
    return open(path).read()


def apply_edit(text, edit):
    """The text after applying an LSP text edit (UTF-8 columns, which the server chose)."""
    lines = text.split("\n")
    (sl, sc), (el, ec) = (
        (edit["range"]["start"]["line"], edit["range"]["start"]["character"]),
        (edit["range"]["end"]["line"], edit["range"]["end"]["character"]),
    )
    def offset(line, col):
        return sum(len(l.encode()) + 1 for l in lines[:line]) + col
    raw = text.encode()
    return (raw[: offset(sl, sc)] + edit["newText"].encode() + raw[offset(el, ec):]).decode()


def line_of(text, n):
    return text.split("\n")[n]


def check(name, ok, detail):
    if not ok:
        raise AssertionError(f"{name}: {detail}\n--- pane ---\n{pane()}")
    print(f"helix: {name}: ok ({detail})", flush=True)


def main():
    os.makedirs(CONFIG_DIR, exist_ok=True)
    os.makedirs(os.path.dirname(FILE), exist_ok=True)
    for path, text in [(FILE, TEXT), (LINES, LINES_TEXT)]:
        with open(path, "w") as f:
            f.write(text)
    settings = {
        "model": MODEL,
        "maxTokens": 24,
        "multiLine": "never",
        # A fixed 300 ms debounce: a key typed 100 ms after a request surely arrives while
        # that request is still waiting (the late-answer check below depends on it).
        "debounceMs": 300,
        "debounceMaxMs": 300,
    }
    write_languages(settings)
    with open(os.path.join(CONFIG_DIR, "config.toml"), "w") as f:
        # No auto-pairs and no word completion: the popup holds amd-lsp's item alone, and what
        # the file becomes is what was typed plus what was accepted.
        f.write("[editor]\ncompletion-timeout = 5\ncompletion-trigger-len = 1\nidle-timeout = 5\n"
                "auto-pairs = false\n[editor.word-completion]\nenable = false\n")
    env = (
        f"HELIX_RUNTIME={RUNTIME} XDG_CONFIG_HOME={WORK}/config XDG_CACHE_HOME={WORK}/cache "
        f"XDG_DATA_HOME={WORK}/data"
    )
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "30",
         f"cd {WORK}/project && env {env} {HX} -vv app.py; sleep 600")
    try:
        run(settings)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
        shutil.copy(LOG, os.path.join(WORK, "helix.log")) if os.path.exists(LOG) else None


def run(settings):
    wait("the model to load", lambda: load_ended(1))
    check("model loaded", MODEL in loads()[0], loads()[0])

    # 1. The popup shows amd-lsp's item; Tab selects it, Enter accepts it: the file becomes
    #    the document with exactly the item's edit applied.
    keys(":11", "Enter", "A")
    n = len(completions())
    type_text("with open(pa")
    req, item = wait("an amd-lsp item after `with open(pa`", lambda: answered_item(n))
    label = item["label"].split("\n")[0].strip()
    wait(f"the popup to show {label!r}", lambda: label[:20] in pane(), 10)
    before = TEXT.replace("def write_config(path, text):\n    \n",
                          "def write_config(path, text):\n    with open(pa\n")
    keys("Tab", "Enter")
    after = saved()
    expected = apply_edit(before, item["textEdit"])
    check("accept inserts the suggestion after what was typed", after == expected,
          f"line 11 {line_of(after, 10)!r}, expected {line_of(expected, 10)!r}")

    # 2. A key typed while a request is pending: the answer made for `pa` must not come back
    #    as a current item (it would replace the typed `th`), and the line keeps what was typed.
    keys("o")
    n = len(completions())
    type_text("f = open(pa")
    wait("a completion request at `open(pa`", lambda: len(completions()) > n, 10)
    time.sleep(0.1)
    type_text("th")
    stale_req = completions()[n][0]
    wait("the answer to the request made at `pa`",
         lambda: next((r for q, r in completions() if q["id"] == stale_req["id"] and r), None), 30)
    resp = next(r for q, r in completions() if q["id"] == stale_req["id"])
    result = resp.get("result") or {}
    stale_items = result.get("items", []) if isinstance(result, dict) else result
    check("an answer made for an older version is empty and incomplete",
          stale_items == [] and isinstance(result, dict) and result.get("isIncomplete") is True,
          f"request at character {stale_req['params']['position']['character']}: {json.dumps(result)[:200]}")
    time.sleep(1.5)
    text = saved()
    check("the typed text survives", line_of(text, 11) == "    f = open(path", repr(line_of(text, 11)))

    # 3. Settings change: Helix sends settings only when a server starts (initializationOptions,
    #    then workspace/didChangeConfiguration after `initialized`); `:config-reload` alone
    #    sends nothing, so `:lsp-restart` follows. The restarted server has the new settings.
    settings.update({"multiLine": "always", "maxTokens": 48})
    restart_with(settings, 2)
    configs = [m["params"]["settings"] for d, m in messages()
               if d == "->" and m.get("method") == "workspace/didChangeConfiguration"]
    check("lsp-restart with new settings", configs[-1].get("multiLine") == "always",
          f"{len(loads())} loads, last settings {configs[-1]}")

    # 4. Multi-line items: at an indented empty line after `def count_lines(path):`, Ctrl-x
    #    asks by hand; accepting inserts the item's lines exactly as it has them (the server
    #    sends `insertTextMode: asIs`; Helix adds no indentation of its own).
    keys(":open lines.py", "Enter", "ge", "A")
    n = len(completions())
    keys("C-x")
    req, item = wait("an amd-lsp item at an indented empty line", lambda: answered_item(n))
    check("the item has several lines", "\n" in item["textEdit"]["newText"], repr(item["textEdit"]["newText"]))
    wait("the popup", lambda: item["label"].split("\n")[0].strip()[:10] in pane(), 10)
    keys("Tab", "Enter")
    after = saved_as(LINES)
    expected = apply_edit(LINES_TEXT, item["textEdit"])
    # Helix ends a file it writes with a newline (`insert-final-newline`).
    check("a multi-line item is inserted as is", after in (expected, expected + "\n"), repr(after[len(LINES_TEXT) - 30:]))

    # 5. Another model: the restarted server loads it.
    settings["model"] = OTHER_MODEL
    restart_with(settings, 3)
    check("model change", OTHER_MODEL in loads()[-1], loads()[-1])
    keys("ge", "o")
    n = len(completions())
    type_text("import sy")
    wait("an item from the other model", lambda: answered_item(n), 60)

    # 6. A typist at human speed through a real file with the shipped settings, accepting
    #    every item that agrees with what they are about to type.
    shipped = {"model": MODEL, "maxTokens": 48, "multiLine": "never"}
    restart_with(shipped, 4)
    typing_session()
    keys("Escape", "Escape", ":q!", "Enter")
    print("helix: all checks passed", flush=True)


def typing_session():
    """Retypes the code lines of functions in heapq.py (emptied but for their indentation)
    at a person's pace: 80-200 ms a key, a 700 ms look after half the non-identifier keys.
    When amd-lsp's item for the cursor shows and the line it makes is a prefix of the line
    being typed, the typist takes it (Tab, Enter) and types on from there. At the end the file
    must be the original, byte for byte: a wrong or stale accept would show as a changed line."""
    rng = random.Random(7)
    original = open(os.path.join(REPO, "tests", "fixtures", "documents", "heapq.py")).read()
    lines = original.split("\n")
    chosen = [i for i in range(132, 169) if lines[i].strip() and not lines[i].strip().startswith(('"', "#"))
              and lines[i].startswith("    ") and '"""' not in lines[i]
              and not lines[i].strip().startswith(("if item", "item = heaprepl"))]
    # About 250 keystrokes' worth of lines.
    while sum(len(lines[i].strip()) for i in chosen[:-1]) > 250:
        chosen.pop()
    start = [l[: len(l) - len(l.lstrip())] if i in chosen else l for i, l in enumerate(lines)]
    path = os.path.join(WORK, "project", "heapq.py")
    with open(path, "w") as f:
        f.write("\n".join(start))
    keys(":open heapq.py", "Enter")
    n_keys = n_shown = n_accepted = n_chars_accepted = 0
    popup_ms = []
    for idx in chosen:
        target = lines[idx]
        keys(f":{idx + 1}", "Enter", "A")
        i = len(target) - len(target.lstrip())
        while i < len(target):
            n = len(completions())
            sent = time.monotonic()
            type_text(target[i])
            i += 1
            n_keys += 1
            pause = rng.uniform(0.08, 0.2)
            if not (target[i - 1].isalnum() or target[i - 1] == "_") and rng.random() < 0.5:
                pause = 0.7
            deadline = sent + pause
            while time.monotonic() < deadline:
                found = answered_item(n)
                if found and found[0]["params"]["position"] == {"line": idx, "character": len(target[:i].encode())}:
                    item = found[1]
                    label = item["label"].split("\n")[0].strip()[:12]
                    seen = wait_quietly(lambda: popup_shows(label), 1.0)
                    if seen is None:
                        break
                    n_shown += 1
                    popup_ms.append((seen - sent) * 1000)
                    edit = json.loads(json.dumps(item["textEdit"]))
                    edit["range"]["start"]["line"] = edit["range"]["end"]["line"] = 0
                    made = apply_edit(target[:i], edit)
                    if target.startswith(made) and len(made) > i:
                        keys("Tab", "Enter")
                        n_accepted += 1
                        n_chars_accepted += len(made) - i
                        i = len(made)
                    break
                time.sleep(0.01)
            time.sleep(max(0.0, deadline - time.monotonic()))
        keys("Escape")
    after = saved_as(path)
    changed = [k + 1 for k, (a, b) in enumerate(zip(after.split("\n"), lines)) if a != b]
    popup_ms.sort()
    q = lambda f: popup_ms[min(len(popup_ms) - 1, int(f * len(popup_ms)))] if popup_ms else float("nan")
    summary = (f"{n_keys} keystrokes over {len(chosen)} lines, {n_shown} popups shown, {n_accepted} accepted "
               f"({n_chars_accepted} characters), key to popup p50 {q(0.5):.0f} ms, p90 {q(0.9):.0f} ms, corrupted lines {changed}")
    with open(os.path.join(WORK, "session.txt"), "w") as f:
        f.write(summary + "\n")
    check("typing session", after.rstrip("\n") == original.rstrip("\n") and n_keys >= 200, summary)


def popup_shows(label):
    """A popup row: the item's label, then its kind (`text`) at the row's end."""
    return any(label in row and re.search(r"\btext\s*$", row) for row in pane().split("\n"))


def wait_quietly(predicate, timeout):
    """When `predicate` first held (monotonic seconds), or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.02)
    return None


def restart_with(settings, n_loads):
    write_languages(settings)
    keys("Escape", "Escape", ":config-reload", "Enter", ":lsp-restart", "Enter")
    wait(f"load {n_loads}", lambda: load_ended(n_loads), 60)


if __name__ == "__main__":
    main()
