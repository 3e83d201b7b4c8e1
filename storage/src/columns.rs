//! Columns of field values as the buffer builds them, row by row, and values taken back out
//! of Arrow arrays: what the table buffer and the newest-rows cache both store.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Float64Array, Int64Array,
    RecordBatch, StringArray, UInt64Array, new_null_array,
};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, UInt64Type};
use sluice_model::{FieldValue, Sym, Symbols};

/// The values of one field column and which rows hold one; rows without a value are null.
pub struct FieldColumn {
    data: FieldData,
    valid: BooleanBufferBuilder,
}

enum FieldData {
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(BooleanBufferBuilder),
    Str(Vec<String>),
}

impl FieldColumn {
    /// An empty column for values of `value`'s type, with room for `capacity` rows.
    pub fn new(value: &FieldValue, capacity: usize) -> Self {
        let data = match value {
            FieldValue::F64(_) => FieldData::F64(Vec::with_capacity(capacity)),
            FieldValue::I64(_) => FieldData::I64(Vec::with_capacity(capacity)),
            FieldValue::U64(_) => FieldData::U64(Vec::with_capacity(capacity)),
            FieldValue::Bool(_) => FieldData::Bool(BooleanBufferBuilder::new(capacity)),
            FieldValue::Str(_) => FieldData::Str(Vec::with_capacity(capacity)),
        };
        FieldColumn {
            data,
            valid: BooleanBufferBuilder::new(capacity),
        }
    }

    /// Rows held, the null ones included.
    fn len(&self) -> usize {
        self.valid.len()
    }

    /// Sets row `row` wherever it is, padding with nulls up to it.
    pub fn put(&mut self, row: usize, value: &FieldValue, symbols: &Symbols) {
        self.pad(row + 1);
        self.set(row, value, symbols);
    }

    /// Sets row `row` to `value` (of the column's type) wherever it is.
    pub fn put_owned(&mut self, row: usize, value: OwnedValue) {
        self.pad(row + 1);
        self.valid.set_bit(row, true);
        match (&mut self.data, value) {
            (FieldData::F64(v), OwnedValue::F64(x)) => v[row] = x,
            (FieldData::I64(v), OwnedValue::I64(x)) => v[row] = x,
            (FieldData::U64(v), OwnedValue::U64(x)) => v[row] = x,
            (FieldData::Bool(v), OwnedValue::Bool(x)) => v.set_bit(row, x),
            (FieldData::Str(v), OwnedValue::Str(x)) => v[row] = x,
            _ => {
                self.valid.set_bit(row, false);
                tracing::error!("field value does not match its column type; stored as null");
            }
        }
    }

    /// Whether row `row` holds a value.
    pub fn is_set(&self, row: usize) -> bool {
        row < self.len() && self.valid.get_bit(row)
    }

    /// Pads with nulls up to `len` rows.
    #[inline]
    fn pad(&mut self, len: usize) {
        let n = len.saturating_sub(self.len());
        if n == 0 {
            return;
        }
        self.valid.append_n(n, false);
        match &mut self.data {
            FieldData::F64(v) => v.resize(len, 0.0),
            FieldData::I64(v) => v.resize(len, 0),
            FieldData::U64(v) => v.resize(len, 0),
            FieldData::Bool(v) => v.append_n(n, false),
            FieldData::Str(v) => v.resize(len, String::new()),
        }
    }

    /// Appends `values` as rows `start..`, padding with nulls up to `start`; false (and
    /// nothing changed) unless this is a float column with no row at or past `start`.
    pub fn append_f64s(&mut self, start: usize, values: &[f64]) -> bool {
        if self.len() > start || !matches!(self.data, FieldData::F64(_)) {
            return false;
        }
        self.pad(start);
        let FieldData::F64(v) = &mut self.data else {
            unreachable!("checked above")
        };
        v.extend_from_slice(values);
        self.valid.append_n(values.len(), true);
        true
    }

    /// Sets row `row`, which is either the last row (a field repeated in one point: the
    /// later value wins) or the next one. Returns the bytes added.
    pub fn set(&mut self, row: usize, value: &FieldValue, symbols: &Symbols) -> usize {
        self.pad(row);
        let append = self.len() == row;
        if append {
            self.valid.append(true);
        } else {
            self.valid.set_bit(row, true);
        }
        macro_rules! put {
            ($v:expr, $x:expr) => {
                if append { $v.push($x) } else { $v[row] = $x }
            };
        }
        match (&mut self.data, value) {
            (FieldData::F64(v), FieldValue::F64(x)) => put!(v, *x),
            (FieldData::I64(v), FieldValue::I64(x)) => put!(v, *x),
            (FieldData::U64(v), FieldValue::U64(x)) => put!(v, *x),
            (FieldData::Bool(v), FieldValue::Bool(x)) => {
                if append {
                    v.append(*x)
                } else {
                    v.set_bit(row, *x)
                }
            }
            (FieldData::Str(v), FieldValue::Str(s)) => {
                let s = symbols.get(*s).to_string();
                let n = s.len();
                put!(v, s);
                return 8 + n;
            }
            // Validation fixed the column's type before the point got here; a mismatch means
            // a bug, and storing a null is the least harmful answer to it.
            _ => {
                self.valid.set_bit(row, false);
                tracing::error!("field value does not match its column type; stored as null");
            }
        }
        8
    }

    /// The first `rows` rows as an Arrow array (null past the rows it holds), built from the
    /// column's own vectors without copying them (strings are copied, as by
    /// [`FieldColumn::to_array`]).
    pub fn into_array(mut self, rows: usize) -> ArrayRef {
        if self.len() > rows || matches!(self.data, FieldData::Str(_)) {
            return self.to_array(rows);
        }
        self.pad(rows);
        let nulls = Some(NullBuffer::new(self.valid.finish()));
        match self.data {
            FieldData::F64(v) => Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls)),
            FieldData::I64(v) => Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls)),
            FieldData::U64(v) => Arc::new(UInt64Array::new(ScalarBuffer::from(v), nulls)),
            FieldData::Bool(mut v) => Arc::new(BooleanArray::new(v.finish(), nulls)),
            FieldData::Str(_) => unreachable!("strings are copied above"),
        }
    }

    /// The first `rows` rows as an Arrow array (null past the rows it holds).
    pub fn to_array(&self, rows: usize) -> ArrayRef {
        let n = self.len().min(rows);
        let mut valid = self.valid.finish_cloned().slice(0, n);
        if n < rows {
            let mut b = BooleanBufferBuilder::new(rows);
            b.append_buffer(&valid);
            b.append_n(rows - n, false);
            valid = b.finish();
        }
        let nulls = Some(NullBuffer::new(valid));
        fn values<T: arrow::datatypes::ArrowNativeType>(
            v: &[T],
            n: usize,
            rows: usize,
        ) -> ScalarBuffer<T> {
            let mut out = Vec::with_capacity(rows);
            out.extend_from_slice(&v[..n]);
            out.resize(rows, T::default());
            ScalarBuffer::from(out)
        }
        match &self.data {
            FieldData::F64(v) => Arc::new(Float64Array::new(values(v, n, rows), nulls)),
            FieldData::I64(v) => Arc::new(Int64Array::new(values(v, n, rows), nulls)),
            FieldData::U64(v) => Arc::new(UInt64Array::new(values(v, n, rows), nulls)),
            FieldData::Bool(v) => {
                let mut b = BooleanBufferBuilder::new(rows);
                b.append_buffer(&v.finish_cloned().slice(0, n));
                b.append_n(rows - n, false);
                Arc::new(BooleanArray::new(b.finish(), nulls))
            }
            FieldData::Str(v) => {
                let valid = nulls.as_ref().expect("set above");
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i < n && valid.is_valid(i)).then(|| v[i].as_str())),
                ))
            }
        }
    }
}

/// A field value taken out of an Arrow array.
pub enum OwnedValue {
    F64(f64),
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(String),
}

impl OwnedValue {
    /// The value as the write path carries it, for choosing a column's type (strings are not
    /// interned, so their symbol is a placeholder).
    pub fn as_field_value(&self) -> FieldValue {
        match self {
            OwnedValue::F64(x) => FieldValue::F64(*x),
            OwnedValue::I64(x) => FieldValue::I64(*x),
            OwnedValue::U64(x) => FieldValue::U64(*x),
            OwnedValue::Bool(x) => FieldValue::Bool(*x),
            OwnedValue::Str(_) => FieldValue::Str(Sym(0)),
        }
    }

    /// Row `row` of `array`, if the array holds field values (Float64, Int64, UInt64,
    /// Boolean or Utf8).
    pub fn from_array(array: &dyn Array, row: usize) -> Option<OwnedValue> {
        Some(match array.data_type() {
            DataType::Float64 => OwnedValue::F64(array.as_primitive::<Float64Type>().value(row)),
            DataType::Int64 => OwnedValue::I64(array.as_primitive::<Int64Type>().value(row)),
            DataType::UInt64 => OwnedValue::U64(array.as_primitive::<UInt64Type>().value(row)),
            DataType::Boolean => OwnedValue::Bool(array.as_boolean().value(row)),
            DataType::Utf8 => OwnedValue::Str(array.as_string::<i32>().value(row).to_string()),
            _ => return None,
        })
    }
}

/// `batch` in `schema`: columns taken by name, columns it lacks (added to the table after the
/// batch was built) all null, and a column of another type cast to the schema's (a float
/// field a Parquet file stores as whole numbers, see `lake::parquet`, both ways).
pub fn align_to_schema(batch: &RecordBatch, schema: &SchemaRef) -> RecordBatch {
    if batch.schema().fields() == schema.fields() {
        return batch.clone();
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.schema().index_of(f.name()) {
            Ok(i) if batch.column(i).data_type() != f.data_type() => {
                cast(batch.column(i), f.data_type()).expect("a stored type casts to the table's")
            }
            Ok(i) => batch.column(i).clone(),
            Err(_) => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).expect("columns follow the schema")
}
