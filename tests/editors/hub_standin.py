"""A local stand-in for the Hugging Face hub (no machine here reaches the real one): serves the
files of DIR as repository REPO with the URL layout and headers hf-hub reads (the repository
listing, `resolve/main/FILE` with ranges, `x-repo-commit`, and for LFS files the sha256 as
`x-linked-etag`). Same protocol as the stand-in in server/tests/pull.rs. Writes its port to
PORT_FILE and serves until killed.

    python3 hub_standin.py DIR REPO PORT_FILE
"""
import hashlib
import http.server
import json
import os
import sys

ROOT, REPO, PORT_FILE = sys.argv[1], sys.argv[2], sys.argv[3]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".model", ".gguf", ".bin")


class Hub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("hub: " + (fmt % args) + "\n")

    def send(self, status, headers, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        files = sorted(os.listdir(ROOT))
        if self.path == f"/api/models/{REPO}/revision/main":
            body = json.dumps({"sha": COMMIT, "siblings": [{"rfilename": f} for f in files]})
            return self.send(200, [("Content-Type", "application/json")], body.encode())
        prefix = f"/{REPO}/resolve/main/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        if name not in files:
            return self.send(404, [], b"not found")
        with open(os.path.join(ROOT, name), "rb") as f:
            data = f.read()
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            start = int(a or 0)
            end = min(int(b), len(data) - 1) if b else len(data) - 1
        sha = hashlib.sha256(data).hexdigest()
        headers = [("x-repo-commit", COMMIT), ("Content-Range", f"bytes {start}-{end}/{len(data)}")]
        if name.endswith(LFS_SUFFIXES):
            headers += [("x-linked-etag", f'"{sha}"'), ("etag", '"pointer-sha1"')]
        else:
            headers.append(("etag", f'"{sha[:40]}"'))
        self.send(206, headers, data[start:end + 1])


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
