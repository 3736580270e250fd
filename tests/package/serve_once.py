"""One editor session against an unpacked release binary: initialize, open a document, ask for
an inline completion, check that it holds a suggestion, shut down. Exits non-zero otherwise.

    python3 serve_once.py BIN MODEL.gguf
"""
import json
import subprocess
import sys


def main() -> None:
    binary, model = sys.argv[1], sys.argv[2]
    server = subprocess.Popen(
        [binary, "--stdio", "--model", model],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
    )
    ids = iter(range(1, 1_000_000))

    def send(msg: dict) -> None:
        body = json.dumps(msg).encode()
        server.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        server.stdin.flush()

    def read() -> dict:
        length = None
        while True:
            line = server.stdout.readline()
            if not line:
                sys.exit("package: the server closed its output")
            line = line.strip()
            if not line:
                break
            name, _, value = line.partition(b":")
            assert name == b"Content-Length", line
            length = int(value)
        return json.loads(server.stdout.read(length))

    def request(method: str, params) -> dict:
        rid = next(ids)
        send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        while True:
            msg = read()
            if msg.get("id") == rid and "method" not in msg:
                return msg

    def notify(method: str, params) -> None:
        send({"jsonrpc": "2.0", "method": method, "params": params})

    request("initialize", {"capabilities": {"textDocument": {"inlineCompletion": {}}},
                           "initializationOptions": {"debounceMs": 0}})
    notify("initialized", {})
    while (state := request("amd/status", None)["result"]["state"]) == "loading":
        pass
    assert state == "ready", state
    text = "def add(a, b):\n    return "
    uri = "file:///fresh/add.py"
    notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "python", "version": 1, "text": text}})
    answer = request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": 1, "character": 11},
        "context": {"triggerKind": 1}})
    items = answer["result"]["items"]
    assert items and items[0]["insertText"].strip(), answer
    print("package: suggestion", json.dumps(items[0]["insertText"]))
    request("shutdown", None)
    notify("exit", None)
    assert server.wait(timeout=30) == 0


if __name__ == "__main__":
    main()
