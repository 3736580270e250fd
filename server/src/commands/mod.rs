//! Command-line commands other than the language server itself.

pub(crate) mod bench;
pub(crate) mod complete;
pub(crate) mod dev;
pub(crate) mod model;
