//! Checks shared by the fuzz targets (`fuzz/`) and the tests that replay their corpora.

use crate::gguf;
use crate::gguf::validate;

/// The GGUF reader and the model checks never panic on any bytes, and a header they accept
/// describes only tensors inside the file.
pub fn check_gguf(data: &[u8]) {
    let Ok(header) = gguf::parse_header(data) else {
        return;
    };
    for t in &header.tensors {
        let end = t
            .n_bytes()
            .and_then(|n| header.data_offset.checked_add(t.offset)?.checked_add(n));
        assert!(end.is_some_and(|end| end <= data.len() as u64), "{t:?}");
    }
    let _ = validate::check_header(&header, false);
    let _ = validate::check_header(&header, true);
}
