//! How the mapping is set up.

/// How the mapping is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Resource attributes copied onto every series of their resource as tags
    /// (`--otlp-promote-resource-attributes`).
    pub promote: Vec<String>,
}
