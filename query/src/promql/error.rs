//! Why a PromQL query did not answer.

use std::time::Duration;

use crate::QueryError;

/// Why a PromQL query did not answer (and, for the HTTP API, which `errorType`).
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The query or a parameter is not valid: `bad_data`.
    #[error("{0}")]
    BadData(String),
    /// The query failed while it ran: `execution`.
    #[error("{0}")]
    Execution(String),
    #[error(
        "query processing would load too many samples into memory in query execution: more than {0} (--promql-max-samples)"
    )]
    TooManySamples(usize),
    #[error("query timed out in expression evaluation after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("internal error: {0}")]
    Internal(String),
}
