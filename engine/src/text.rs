//! Generated text: UTF-8 assembly across token boundaries and the stop rules. Pure.

use crate::StopReason;

/// Turns a stream of token byte pieces into text. A character whose bytes are split over
/// several tokens (byte-fallback tokens such as `<0xE4>`) comes out whole once complete;
/// bytes that can never form a character become U+FFFD.
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Utf8Stream {
        Utf8Stream::default()
    }

    /// Whether no bytes of an unfinished character are waiting.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Adds bytes and appends every character they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: `valid` bytes were just checked to be UTF-8.
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid])
                            .unwrap_or_default(),
                    );
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += valid + bad;
                        }
                        None => {
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
    }

    /// Bytes held back, waiting for the rest of their character.
    pub fn n_pending(&self) -> usize {
        self.pending.len()
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            self.pending.clear();
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// When to stop generating, besides end-of-generation tokens and the token budget.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopRules {
    /// Stop before the first occurrence of any of these; the stop text is not returned.
    pub stop_strings: Vec<String>,
    /// Stop at the first newline; the newline is not returned.
    pub single_line: bool,
}

impl StopRules {
    /// Looks for a stop in `text`, where bytes before `checked` were already searched.
    /// Returns the byte length to keep and why.
    pub fn find(&self, text: &str, checked: usize) -> Option<(usize, StopReason)> {
        let mut best: Option<(usize, StopReason)> = None;
        let mut consider = |at: usize, why: StopReason| {
            if best.is_none_or(|(b, _)| at < b) {
                best = Some((at, why));
            }
        };
        if self.single_line {
            let from = floor_char_boundary(text, checked);
            if let Some(i) = text[from..].find('\n') {
                consider(from + i, StopReason::LineEnd);
            }
        }
        for stop in self.stop_strings.iter().filter(|s| !s.is_empty()) {
            // A stop string may straddle the boundary: look back by its length.
            let from = floor_char_boundary(text, checked.saturating_sub(stop.len() - 1));
            if let Some(i) = text[from..].find(stop.as_str()) {
                consider(from + i, StopReason::StopString);
            }
        }
        best
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(pieces: &[&[u8]]) -> (Vec<String>, String) {
        let mut stream = Utf8Stream::new();
        let mut steps = Vec::new();
        let mut all = String::new();
        for p in pieces {
            let mut out = String::new();
            stream.push(p, &mut out);
            all.push_str(&out);
            steps.push(out);
        }
        stream.finish(&mut all);
        (steps, all)
    }

    #[test]
    fn multibyte_character_split_over_tokens_comes_out_whole() {
        // "你" is E4 BD A0, "🙂" is F0 9F 99 82.
        let (steps, all) = assemble(&[
            b" x",
            &[0xE4],
            &[0xBD],
            &[0xA0, b'!'],
            &[0xF0, 0x9F],
            &[0x99, 0x82],
        ]);
        assert_eq!(steps, [" x", "", "", "你!", "", "🙂"]);
        assert_eq!(all, " x你!🙂");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (_, all) = assemble(&[&[b'a', 0xFF, b'b'], &[0xE4, 0xBD]]);
        assert_eq!(all, "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn single_line_stops_at_first_newline() {
        let rules = StopRules {
            single_line: true,
            ..StopRules::default()
        };
        assert_eq!(rules.find("foo(bar)", 0), None);
        assert_eq!(
            rules.find("foo(bar)\n    x", 5),
            Some((8, StopReason::LineEnd))
        );
    }

    #[test]
    fn stop_string_straddling_the_checked_boundary_is_found() {
        let rules = StopRules {
            stop_strings: vec!["\ndef ".into(), "</s>".into()],
            single_line: false,
        };
        let text = "return x\ndef f";
        assert_eq!(rules.find(text, 10), Some((8, StopReason::StopString)));
        assert_eq!(
            rules.find("ab</s>cd</s>", 0),
            Some((2, StopReason::StopString))
        );
        assert_eq!(rules.find("héllo", 2), None);
    }

    #[test]
    fn earliest_stop_wins() {
        let rules = StopRules {
            stop_strings: vec!["#".into()],
            single_line: true,
        };
        assert_eq!(rules.find("a # b\nc", 0), Some((2, StopReason::StopString)));
        assert_eq!(rules.find("a b\nc #", 0), Some((3, StopReason::LineEnd)));
    }
}
