//! Query results as bytes: the output formats of `/api/v3/query_sql`.

use std::str::FromStr;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON array of objects, one per row (nulls omitted).
    Json,
    /// One JSON object per line.
    JsonLines,
    /// CSV with a header line.
    Csv,
    /// A text table, as the CLI shows it.
    Pretty,
    /// A Parquet file.
    Parquet,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "json" => Format::Json,
            "jsonl" => Format::JsonLines,
            "csv" => Format::Csv,
            "pretty" => Format::Pretty,
            "parquet" => Format::Parquet,
            other => {
                return Err(format!(
                    "unknown format '{other}'; use json, jsonl, csv, pretty or parquet"
                ));
            }
        })
    }
}

impl Format {
    /// The format an `Accept` header asks for, if it names one.
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept.split(',').find_map(|part| {
            let mime = part.split(';').next().unwrap_or("").trim();
            Some(match mime {
                "application/json" => Format::Json,
                "application/jsonl" | "application/x-ndjson" | "application/jsonlines" => {
                    Format::JsonLines
                }
                "text/csv" => Format::Csv,
                "text/plain" => Format::Pretty,
                "application/vnd.apache.parquet" | "application/x-parquet" => Format::Parquet,
                _ => return None,
            })
        })
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/jsonl",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Pretty => "text/plain; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// Encodes `batches` (of `schema`) in this format.
    pub fn encode(
        self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<Vec<u8>, ArrowError> {
        use datafusion::arrow::{csv, json};
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        let mut out = Vec::new();
        match self {
            Format::Json => {
                let mut w = json::ArrayWriter::new(&mut out);
                w.write_batches(&refs)?;
                w.finish()?;
                if out.is_empty() {
                    out.extend_from_slice(b"[]");
                }
            }
            Format::JsonLines => {
                let mut w = json::LineDelimitedWriter::new(&mut out);
                w.write_batches(&refs)?;
                w.finish()?;
            }
            Format::Csv => {
                let mut w = csv::WriterBuilder::new().with_header(true).build(&mut out);
                if batches.is_empty() {
                    w.write(&RecordBatch::new_empty(schema.clone()))?;
                }
                for b in batches {
                    w.write(b)?;
                }
            }
            Format::Pretty => {
                let table = datafusion::arrow::util::pretty::pretty_format_batches_with_schema(
                    schema.clone(),
                    batches,
                )?;
                out = format!("{table}\n").into_bytes();
            }
            Format::Parquet => {
                let mut w = ArrowWriter::try_new(&mut out, schema.clone(), None)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                for b in batches {
                    w.write(b)
                        .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                }
                w.close()
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
            }
        }
        Ok(out)
    }
}
