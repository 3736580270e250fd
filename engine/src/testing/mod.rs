//! What tests, fuzz targets and the `dev`/`bench` tools build on: random-weight models and the
//! fuzz entry points. Never called on a job's path.

pub mod fuzz;
pub mod testmodel;
