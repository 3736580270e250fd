//! `amd-lsp bench …`: benchmarks users can run on their own models and machines.

mod humaneval;
pub(crate) mod index;
pub(crate) mod quality;
pub(crate) mod replay;
pub(crate) mod soak;
pub(crate) mod spec;
