//! The vocabulary of a SentencePiece `tokenizer.model` (a protobuf `ModelProto`): pieces,
//! scores and types, in id order. Only field 1 (`repeated SentencePiece pieces`) is needed:
//! `SentencePiece { string piece = 1; float score = 2; Type type = 3; }`.
//!
//! A protobuf reader for three fields is smaller than a code-generation dependency (prost
//! plus a build script), so it is written here; it is bounded and never panics on bad input.

/// One vocabulary entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub text: String,
    pub score: f32,
    /// SentencePiece's type numbers, which GGUF's `tokenizer.ggml.token_type` shares:
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub kind: i32,
}

#[derive(Debug, thiserror::Error)]
#[error("tokenizer.model is not a SentencePiece model: {0}")]
pub struct SpmError(String);

/// Parses the pieces of a serialized `ModelProto`.
pub fn parse(bytes: &[u8]) -> Result<Vec<Piece>, SpmError> {
    let mut pieces = Vec::new();
    let mut r = Reader { bytes, pos: 0 };
    while !r.done() {
        let (field, wire) = r.key()?;
        if field == 1 && wire == 2 {
            let body = r.bytes()?;
            pieces.push(parse_piece(body)?);
        } else {
            r.skip(wire)?;
        }
    }
    if pieces.is_empty() {
        return Err(SpmError("no pieces".into()));
    }
    Ok(pieces)
}

fn parse_piece(bytes: &[u8]) -> Result<Piece, SpmError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: 1,
    };
    while !r.done() {
        match r.key()? {
            (1, 2) => {
                piece.text = String::from_utf8(r.bytes()?.to_vec())
                    .map_err(|_| SpmError("piece is not UTF-8".into()))?;
            }
            (2, 5) => piece.score = f32::from_le_bytes(r.fixed32()?),
            (3, 0) => {
                piece.kind = i32::try_from(r.varint()?)
                    .map_err(|_| SpmError("piece type out of range".into()))?
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(piece)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, SpmError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| SpmError("truncated varint".into()))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(SpmError("varint too long".into()))
    }

    fn key(&mut self) -> Result<(u64, u8), SpmError> {
        let key = self.varint()?;
        Ok((key >> 3, (key & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SpmError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| SpmError("truncated field".into()))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn bytes(&mut self) -> Result<&'a [u8], SpmError> {
        let n =
            usize::try_from(self.varint()?).map_err(|_| SpmError("length out of range".into()))?;
        self.take(n)
    }

    fn fixed32(&mut self) -> Result<[u8; 4], SpmError> {
        let b = self.take(4)?;
        Ok([b[0], b[1], b[2], b[3]])
    }

    fn skip(&mut self, wire: u8) -> Result<(), SpmError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            other => Err(SpmError(format!("unsupported wire type {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn piece(text: &str, score: f32, kind: u64) -> Vec<u8> {
        let mut p = vec![0x0a];
        varint(text.len() as u64, &mut p);
        p.extend_from_slice(text.as_bytes());
        p.push(0x15);
        p.extend_from_slice(&score.to_le_bytes());
        p.push(0x18);
        varint(kind, &mut p);
        let mut out = vec![0x0a];
        varint(p.len() as u64, &mut out);
        out.extend(p);
        out
    }

    #[test]
    fn reads_pieces_and_skips_other_fields() {
        let mut model = piece("<unk>", 0.0, 2);
        model.extend(piece("▁the", -3.5, 1));
        // trainer_spec (field 2, length-delimited) must be skipped.
        model.extend([0x12, 0x02, 0x08, 0x01]);
        let pieces = parse(&model).expect("parse");
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[1],
            Piece {
                text: "▁the".into(),
                score: -3.5,
                kind: 1
            }
        );
        assert_eq!(pieces[0].kind, 2);
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert!(parse(b"").is_err());
        assert!(parse(&[0x0a, 0xff, 0xff, 0xff]).is_err());
        assert!(parse(&[0x0f]).is_err());
        let mut model = piece("x", 1.0, 1);
        model.truncate(model.len() - 2);
        assert!(parse(&model).is_err());
    }
}
