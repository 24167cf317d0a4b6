//! Readers of other tensor formats, each in its own module.

pub mod convert;
pub mod gguf;
pub mod safetensors;
