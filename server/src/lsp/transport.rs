//! The wire guard: our own base-protocol framing in front of tower-lsp-server.
//!
//! tower-lsp-server reads stdin through `tokio_util`'s `FramedRead`, which ends the stream at
//! the first frame it cannot decode: one malformed message (bad JSON, an unknown header value,
//! a missing `Content-Length`) and the server exits, losing every open document. So the bytes
//! from the editor pass through [`Decoder`] first. Well-formed messages go on, re-framed with
//! only a `Content-Length` header; everything else is answered here with the JSON-RPC error the
//! specification asks for (`-32700` parse error, `-32600` invalid request, with the message's
//! `id` where one can be read) and dropped. After garbage the decoder finds the next
//! `Content-Length` header and goes on.
//!
//! The server's own output is cut into frames on its way out (by a [`Decoder::trusted`], which
//! does not parse the bodies), so the error answers are written between whole frames, never
//! inside one.
//!
//! Everything is bounded: a header line is at most [`MAX_HEADER_LINE`] bytes, a body at most
//! [`MAX_BODY`]; a larger declared body is refused without reading it.
//!
//! We write this ourselves because neither tower-lsp-server nor its codec can be told to
//! recover (the codec is private), and `lsp-server`'s reader has the same end-at-first-error
//! behaviour.

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tower_lsp_server::jsonrpc::{self, Id};

/// The longest header line kept; longer runs without a newline are garbage.
pub const MAX_HEADER_LINE: usize = 8 << 10;
/// The largest message body accepted (a 10 MB document with JSON escaping fits).
pub const MAX_BODY: usize = 64 << 20;

const CONTENT_LENGTH: &[u8] = b"Content-Length";

/// What the decoder found next in the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The body of a well-formed JSON-RPC message (request, notification or response).
    Message(Vec<u8>),
    /// Input that is not a message (or a request we refuse unread), with the JSON-RPC error
    /// response owed for it.
    Invalid(Rejected),
}

/// Why input was refused, and the response it gets.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected {
    pub why: String,
    /// The serialized JSON-RPC error response.
    pub response: Vec<u8>,
}

/// Incremental base-protocol decoder: push bytes, pull [`Decoded`] items. The items do not
/// depend on how the input was split into pushes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    pos: usize,
    /// The header block being read: whether any line was seen, the length, the first fault.
    in_block: bool,
    length: Option<usize>,
    fault: Option<String>,
    /// The body length once the headers are complete.
    body: Option<usize>,
    /// Pass bodies on without checking they are JSON-RPC messages.
    trusted: bool,
}

impl Decoder {
    /// A decoder for a peer that only writes well-formed messages (the server's own output):
    /// frames are still checked, bodies are not parsed.
    pub fn trusted() -> Decoder {
        Decoder {
            trusted: true,
            ..Decoder::default()
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether the headers are read and the body is awaited.
    pub fn waiting_for_body(&self) -> bool {
        self.body.is_some()
    }

    /// The next complete item, or `None` until more bytes arrive.
    pub fn next_item(&mut self) -> Option<Decoded> {
        loop {
            if let Some(n) = self.body {
                if self.pending() < n {
                    return None;
                }
                let body = self.buf[self.pos..self.pos + n].to_vec();
                self.pos += n;
                self.body = None;
                return Some(if self.trusted {
                    Decoded::Message(body)
                } else {
                    classify(body)
                });
            }
            let rest = &self.buf[self.pos..];
            let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > MAX_HEADER_LINE {
                    // A run without a newline: keep only a tail that could begin a header.
                    let keep = CONTENT_LENGTH.len();
                    self.pos = self.buf.len() - keep;
                    self.note_fault("a header line is too long");
                }
                return None;
            };
            let line = strip_cr(&rest[..eol]).to_vec();
            self.pos += eol + 1;
            if let Some(item) = self.header_line(&line) {
                return Some(item);
            }
        }
    }

    /// Takes one header line; returns an item when it ends a header block with a fault.
    fn header_line(&mut self, line: &[u8]) -> Option<Decoded> {
        if line.is_empty() {
            if !self.in_block {
                return None; // stray blank lines between messages
            }
            return self.end_block();
        }
        // Garbage before a `Content-Length` on the same line: resynchronise on it.
        if let Some(at) = find(line, CONTENT_LENGTH).filter(|&at| at > 0) {
            self.note_fault("bytes that are not a header");
            let fault = self.take_block_fault();
            self.header_line(&line[at..]);
            return fault;
        }
        if line.len() > MAX_HEADER_LINE {
            self.note_fault("a header line is too long");
            return None;
        }
        let starts_block = !self.in_block;
        self.in_block = true;
        let Some((name, value)) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_once(':'))
        else {
            self.note_fault("bytes that are not a header");
            return None;
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            if self.length.is_some() && !starts_block {
                self.note_fault("two Content-Length headers");
            }
            match value.trim().parse::<u64>() {
                Ok(n) => self.length = usize::try_from(n).ok().or(Some(usize::MAX)),
                Err(_) => self.note_fault("a Content-Length that is not a number"),
            }
        }
        // Other headers (Content-Type) are ignored: the body is always read as UTF-8 JSON.
        None
    }

    fn end_block(&mut self) -> Option<Decoded> {
        let length = self.length.take();
        let fault = self.fault.take();
        self.in_block = false;
        match (fault, length) {
            (Some(why), _) => Some(rejected(why, Id::Null, jsonrpc::Error::parse_error())),
            (None, None) => Some(rejected(
                "a header block without Content-Length".into(),
                Id::Null,
                jsonrpc::Error::parse_error(),
            )),
            (None, Some(n)) if n > MAX_BODY => Some(rejected(
                format!("a body of {n} bytes (at most {MAX_BODY} are accepted)"),
                Id::Null,
                jsonrpc::Error::invalid_request(),
            )),
            (None, Some(0)) => Some(rejected(
                "an empty body".into(),
                Id::Null,
                jsonrpc::Error::parse_error(),
            )),
            (None, Some(n)) => {
                self.body = Some(n);
                None
            }
        }
    }

    fn note_fault(&mut self, why: &str) {
        self.in_block = true;
        self.fault.get_or_insert_with(|| why.to_owned());
    }

    /// Ends the current block early (resynchronising), returning its fault if it had one.
    fn take_block_fault(&mut self) -> Option<Decoded> {
        self.length = None;
        self.in_block = false;
        let why = self.fault.take()?;
        Some(rejected(why, Id::Null, jsonrpc::Error::parse_error()))
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A body is passed on only if tower-lsp-server will decode it; otherwise it is answered.
fn classify(body: Vec<u8>) -> Decoded {
    if let Ok(request) = serde_json::from_slice::<jsonrpc::Request>(&body) {
        // The LSP says a `$/` request a server does not implement gets MethodNotFound;
        // tower-lsp-server drops those answers (meant for notifications). We implement none.
        if let Some(id) = request.id().filter(|_| request.method().starts_with("$/")) {
            let mut error = jsonrpc::Error::method_not_found();
            error.data = Some(Value::String(request.method().to_owned()));
            return rejected("an unknown `$/` request".into(), id.clone(), error);
        }
        return Decoded::Message(body);
    }
    if serde_json::from_slice::<jsonrpc::Response>(&body).is_ok() {
        return Decoded::Message(body);
    }
    match serde_json::from_slice::<Value>(&body) {
        Err(e) => rejected(
            format!("a body that is not JSON ({e})"),
            Id::Null,
            jsonrpc::Error::parse_error(),
        ),
        Ok(value) => {
            let id = match value.get("id") {
                Some(Value::Number(n)) => n.as_i64().map_or(Id::Null, Id::Number),
                Some(Value::String(s)) => Id::String(s.clone()),
                _ => Id::Null,
            };
            rejected(
                "JSON that is not a JSON-RPC 2.0 message".into(),
                id,
                jsonrpc::Error::invalid_request(),
            )
        }
    }
}

fn rejected(why: String, id: Id, error: jsonrpc::Error) -> Decoded {
    let response = jsonrpc::Response::from_error(id, error);
    let response = serde_json::to_vec(&response).unwrap_or_default();
    Decoded::Invalid(Rejected { why, response })
}

/// Writes one frame.
async fn write_frame<W: AsyncWrite + Unpin>(out: &mut W, body: &[u8]) -> std::io::Result<()> {
    out.write_all(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes())
        .await?;
    out.write_all(body).await
}

/// Reads the editor's bytes, passes messages to the server, and sends the answers for
/// everything else to the output side. Ends at end of input (dropping `to_server`, which ends
/// the server as end of input would).
pub(crate) async fn pump_input<I, W>(mut input: I, mut to_server: W, answers: mpsc::Sender<Vec<u8>>)
where
    I: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut decoder = Decoder::default();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        while let Some(item) = decoder.next_item() {
            match item {
                Decoded::Message(body) => {
                    if write_frame(&mut to_server, &body).await.is_err() {
                        return; // the server has stopped reading (after `exit`)
                    }
                }
                Decoded::Invalid(rejected) => {
                    tracing::warn!(why = %rejected.why, "refused a malformed message");
                    if answers.send(rejected.response).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = to_server.flush().await;
        match input.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => decoder.push(&chunk[..n]),
            Err(e) => {
                tracing::warn!(error = %e, "reading the client failed");
                break;
            }
        }
    }
    if decoder.pending() > 0 {
        tracing::warn!(
            bytes = decoder.pending(),
            "input ended inside a message; it is dropped"
        );
    }
}

/// Copies the server's frames to the editor, putting the answers for refused input between
/// whole frames. Ends when the server's output ends.
pub(crate) async fn pump_output<R, O>(
    mut from_server: R,
    output: O,
    mut answers: mpsc::Receiver<Vec<u8>>,
) where
    R: AsyncRead + Unpin,
    O: AsyncWrite,
{
    let mut output = std::pin::pin!(output);
    let mut decoder = Decoder::trusted();
    let mut chunk = vec![0u8; 64 << 10];
    let mut answers_open = true;
    loop {
        while let Some(item) = decoder.next_item() {
            // A trusted decoder yields only messages.
            if let Decoded::Message(body) = item {
                if write_frame(&mut output, &body).await.is_err() {
                    return;
                }
            }
        }
        if output.flush().await.is_err() {
            return;
        }
        // Answers first: one is queued before the input that follows it reaches the server,
        // so the editor sees the answers in the order of its input.
        tokio::select! {
            biased;
            answer = answers.recv(), if answers_open => match answer {
                Some(body) => {
                    if write_frame(&mut output, &body).await.is_err() {
                        return;
                    }
                }
                None => answers_open = false,
            },
            read = from_server.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => decoder.push(&chunk[..n]),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &str) -> Vec<u8> {
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    /// Decodes `input` pushed in pieces of `step` bytes, naming each item.
    fn decode(input: &[u8], step: usize) -> Vec<String> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            d.push(piece);
            while let Some(item) = d.next_item() {
                out.push(match item {
                    Decoded::Message(b) => String::from_utf8_lossy(&b).into_owned(),
                    Decoded::Invalid(r) => format!("ERR {}", String::from_utf8_lossy(&r.response)),
                });
            }
        }
        out
    }

    fn check(input: &[u8], expected: &[&str]) {
        for step in [1, 3, 7, 64, input.len()] {
            assert_eq!(
                decode(input, step),
                expected,
                "pushed {step} bytes at a time"
            );
        }
    }

    const EXIT: &str = r#"{"jsonrpc":"2.0","method":"exit"}"#;
    const PARSE: &str =
        r#"ERR {"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#;

    #[test]
    fn frames_and_recovery() {
        check(&frame(EXIT), &[EXIT]);
        // Content-Type without a charset (tower-lsp-server would end the stream on it).
        let typed = format!(
            "Content-Length: {}\r\nContent-Type: application/vscode-jsonrpc\r\n\r\n{EXIT}",
            EXIT.len()
        );
        check(typed.as_bytes(), &[EXIT]);
        // Bad JSON, then a good message.
        let mut input = frame("{abc}");
        input.extend(frame(EXIT));
        check(&input, &[PARSE, EXIT]);
        // No Content-Length.
        let mut input = b"Content-Type: foo\r\n\r\n".to_vec();
        input.extend(frame(EXIT));
        check(&input, &[PARSE, EXIT]);
        // Garbage bytes, then a frame on the same line.
        let mut input = b"\x00\xffgarbage".to_vec();
        input.extend(frame(EXIT));
        check(&input, &[PARSE, EXIT]);
        // A Content-Length too short: the tail of the body is garbage before the next frame.
        let mut input = format!("Content-Length: 10\r\n\r\n{EXIT}").into_bytes();
        input.extend(frame(EXIT));
        check(&input, &[PARSE, PARSE, EXIT]);
        // A huge declared body is refused unread.
        let mut input = b"Content-Length: 99999999999\r\n\r\n".to_vec();
        input.extend(frame(EXIT));
        check(
            &input,
            &[
                r#"ERR {"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid request"},"id":null}"#,
                EXIT,
            ],
        );
    }

    #[test]
    fn json_that_is_not_a_message_is_answered_with_its_id() {
        check(
            &frame(r#"{"jsonrpc":"2.0","id":7,"method":5}"#),
            &[
                r#"ERR {"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid request"},"id":7}"#,
            ],
        );
        check(
            &frame("[1,2]"),
            &[
                r#"ERR {"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid request"},"id":null}"#,
            ],
        );
    }

    #[test]
    fn a_trusted_decoder_frames_without_parsing() {
        let mut d = Decoder::trusted();
        d.push(&frame("{abc}"));
        assert_eq!(d.next_item(), Some(Decoded::Message(b"{abc}".to_vec())));
    }

    #[test]
    fn a_long_line_without_newline_is_dropped_in_bounded_memory() {
        let mut d = Decoder::default();
        for _ in 0..100 {
            d.push(&[b'x'; 4096]);
            assert!(d.next_item().is_none());
            assert!(d.pending() <= MAX_HEADER_LINE + 4096);
        }
        d.push(b"\r\n\r\n");
        d.push(&frame(EXIT));
        assert!(matches!(d.next_item(), Some(Decoded::Invalid(_))));
        assert_eq!(
            d.next_item(),
            Some(Decoded::Message(EXIT.as_bytes().to_vec()))
        );
    }
}
