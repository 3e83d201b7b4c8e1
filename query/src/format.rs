//! Query results as bytes: the output formats of `/api/v3/query_sql`.

use std::str::FromStr;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Rows in one row group of a streamed Parquet answer: the Parquet writer holds one row group
/// before it can send it.
pub const PARQUET_ROW_GROUP_ROWS: usize = 64 * 1024;

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

    /// Whether an answer in this format can be sent while it is computed, with
    /// [`Format::stream_encoder`]. A [`Format::Pretty`] table cannot: its column widths
    /// depend on every row.
    pub fn streams(self) -> bool {
        self != Format::Pretty
    }

    /// An encoder for an answer of `schema` sent batch by batch; `None` for a format that
    /// does not stream ([`Format::streams`]).
    pub fn stream_encoder(self, schema: &SchemaRef) -> Result<Option<StreamEncoder>, ArrowError> {
        use datafusion::arrow::json;
        Ok(Some(match self {
            Format::Json => StreamEncoder::Json(json::ArrayWriter::new(Vec::new())),
            Format::JsonLines => StreamEncoder::JsonLines,
            Format::Csv => StreamEncoder::Csv {
                schema: schema.clone(),
                header_sent: false,
            },
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
                    .build();
                let w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                StreamEncoder::Parquet(Box::new(w))
            }
            Format::Pretty => return Ok(None),
        }))
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

/// Encodes an answer batch by batch, for a response sent while the query runs: each call
/// gives the bytes to send next, so the encoder holds no more than one batch (and, for
/// Parquet, the row group in progress, at most [`PARQUET_ROW_GROUP_ROWS`] rows). The bytes
/// sent in all are those [`Format::encode`] gives for the same batches.
pub enum StreamEncoder {
    Json(datafusion::arrow::json::ArrayWriter<Vec<u8>>),
    JsonLines,
    Csv {
        schema: SchemaRef,
        header_sent: bool,
    },
    Parquet(Box<ArrowWriter<Vec<u8>>>),
}

impl StreamEncoder {
    /// The bytes of `batch`.
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        use datafusion::arrow::{csv, json};
        match self {
            StreamEncoder::Json(w) => {
                w.write(batch)?;
                Ok(std::mem::take(w.get_mut()))
            }
            StreamEncoder::JsonLines => {
                let mut w = json::LineDelimitedWriter::new(Vec::new());
                w.write(batch)?;
                w.finish()?;
                Ok(w.into_inner())
            }
            StreamEncoder::Csv { header_sent, .. } => {
                let mut w = csv::WriterBuilder::new()
                    .with_header(!*header_sent)
                    .build(Vec::new());
                w.write(batch)?;
                *header_sent = true;
                Ok(w.into_inner())
            }
            StreamEncoder::Parquet(w) => {
                w.write(batch)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                Ok(std::mem::take(w.inner_mut()))
            }
        }
    }

    /// The bytes that end the answer.
    pub fn finish(self) -> Result<Vec<u8>, ArrowError> {
        match self {
            StreamEncoder::Json(mut w) => {
                w.finish()?;
                Ok(w.into_inner())
            }
            StreamEncoder::JsonLines => Ok(Vec::new()),
            StreamEncoder::Csv {
                schema,
                header_sent: false,
            } => {
                // an answer without rows still has its header line
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new());
                w.write(&RecordBatch::new_empty(schema))?;
                Ok(w.into_inner())
            }
            StreamEncoder::Csv { .. } => Ok(Vec::new()),
            StreamEncoder::Parquet(mut w) => {
                w.finish()
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                Ok(std::mem::take(w.inner_mut()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, DictionaryArray, Float64Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use std::sync::Arc;

    fn batches(n: usize) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "host",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("v", DataType::Float64, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = |from: usize| {
            let host: DictionaryArray<Int32Type> = (from..from + 3)
                .map(|i| (i % 2 == 0).then(|| format!("h,\"{i}\"")))
                .collect::<Vec<_>>()
                .iter()
                .map(|s| s.as_deref())
                .collect();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(host),
                Arc::new(Float64Array::from(vec![Some(1.5), None, Some(-0.25)])),
                Arc::new(Int64Array::from(vec![from as i64, 7, -1])),
            ];
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        };
        (schema.clone(), (0..n).map(|k| batch(k * 3)).collect())
    }

    /// The streamed bytes of `batches`.
    fn streamed(format: Format, schema: &SchemaRef, batches: &[RecordBatch]) -> Vec<u8> {
        let mut e = format.stream_encoder(schema).unwrap().unwrap();
        let mut out = Vec::new();
        for b in batches {
            out.extend(e.batch(b).unwrap());
        }
        out.extend(e.finish().unwrap());
        out
    }

    #[test]
    fn a_streamed_answer_is_the_collected_one() {
        for n in [0, 1, 3] {
            let (schema, batches) = batches(n);
            for format in [Format::Json, Format::JsonLines, Format::Csv] {
                assert_eq!(
                    String::from_utf8(streamed(format, &schema, &batches)).unwrap(),
                    String::from_utf8(format.encode(&schema, &batches).unwrap()).unwrap(),
                    "{format:?}, {n} batches"
                );
            }
            // Parquet files differ in their row groups; read back, the rows are the same
            let bytes = bytes::Bytes::from(streamed(Format::Parquet, &schema, &batches));
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024)
                    .unwrap();
            let back: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
            let rows = |b: &[RecordBatch]| {
                String::from_utf8(Format::JsonLines.encode(&schema, b).unwrap()).unwrap()
            };
            assert_eq!(rows(&back), rows(&batches), "{n} batches");
        }
        assert!(!Format::Pretty.streams());
        assert!(
            Format::Pretty
                .stream_encoder(&batches(0).0)
                .unwrap()
                .is_none()
        );
    }
}
