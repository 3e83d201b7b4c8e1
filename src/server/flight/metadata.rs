//! Flight SQL's metadata answers that are not queries: primary keys, foreign keys (none),
//! and the SQL types Sluice has; built without gRPC, so they are testable as batches.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};
use sluice_storage::lake::deduplicate::primary_key_columns;

/// The Flight SQL catalog holding every database (as a schema): DataFusion's, which queries
/// can name too.
pub(super) const CATALOG_NAME: &str = sluice_query::catalog_provider::CATALOG_NAME;

/// The one kind of table Sluice has.
pub(super) const TABLE_TYPE: &str = "BASE TABLE";

/// The columns of a `GetPrimaryKeys` answer, as Flight SQL defines them.
pub(super) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The rows of a `GetPrimaryKeys` answer.
#[derive(Default)]
pub(super) struct PrimaryKeys {
    db: Vec<String>,
    table: Vec<String>,
    column: Vec<String>,
    sequence: Vec<i32>,
}

impl PrimaryKeys {
    /// `table`'s key columns, in key order.
    pub(super) fn append(&mut self, db: &str, table: &sluice_storage::TableSchema) {
        let schema = table.arrow_schema();
        let key = primary_key_columns(schema).unwrap_or_default();
        for (n, i) in key.into_iter().enumerate() {
            self.db.push(db.to_string());
            self.table.push(table.name.to_string());
            self.column.push(schema.field(i).name().clone());
            self.sequence.push(n as i32 + 1);
        }
    }

    /// The answer's rows.
    pub(super) fn build(self) -> Result<RecordBatch, arrow::error::ArrowError> {
        use arrow::array::{Int32Array, StringArray};
        let rows = self.db.len();
        RecordBatch::try_new(
            primary_keys_schema(),
            vec![
                Arc::new(StringArray::from(vec![CATALOG_NAME; rows])),
                Arc::new(StringArray::from(self.db)),
                Arc::new(StringArray::from(self.table)),
                Arc::new(StringArray::from(self.column)),
                Arc::new(StringArray::from(vec![PRIMARY_KEY_NAME; rows])),
                Arc::new(Int32Array::from(self.sequence)),
            ],
        )
    }
}

/// What `GetPrimaryKeys` calls every table's key.
const PRIMARY_KEY_NAME: &str = "primary_key";

/// The columns of a `GetExportedKeys`, `GetImportedKeys` or `GetCrossReference` answer.
pub(super) fn foreign_keys_schema() -> SchemaRef {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// The SQL types a Sluice column or result has: tags and string fields, the numeric
/// fields, booleans and `time`.
pub(super) fn xdbc_types() -> Result<XdbcTypeInfoData, String> {
    let mut types = XdbcTypeInfoDataBuilder::new();
    let mut add = |name: &str, kind: XdbcDataType, size: Option<i32>, unsigned: Option<bool>| {
        let text = kind == XdbcDataType::XdbcVarchar;
        let time = kind == XdbcDataType::XdbcTimestamp;
        types.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type: kind,
            column_size: size,
            literal_prefix: (text || time).then(|| "'".into()),
            literal_suffix: (text || time).then(|| "'".into()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: text,
            searchable: Searchable::Full,
            unsigned_attribute: unsigned,
            fixed_prec_scale: false,
            auto_increment: Some(false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: if time {
                XdbcDataType::XdbcDatetime
            } else {
                kind
            },
            datetime_subcode: time.then_some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            num_prec_radix: unsigned.map(|_| 2),
            interval_precision: None,
        });
    };
    add("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None);
    add("DOUBLE", XdbcDataType::XdbcDouble, Some(53), Some(false));
    add("BIGINT", XdbcDataType::XdbcBigint, Some(64), Some(false));
    add(
        "BIGINT UNSIGNED",
        XdbcDataType::XdbcBigint,
        Some(64),
        Some(true),
    );
    add("VARCHAR", XdbcDataType::XdbcVarchar, None, None);
    add("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29), None);
    types.build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::{ColumnKind, TableSchema};

    #[test]
    fn a_tables_primary_key_is_its_tags_then_time() {
        let mut table = TableSchema::new("cpu");
        table.push("usage", ColumnKind::Field(sluice_model::FieldType::Float));
        table.push("region", ColumnKind::Tag);
        table.push("host", ColumnKind::Tag);
        let mut keys = PrimaryKeys::default();
        keys.append("db", &table);
        let batch = keys.build().unwrap();
        assert_eq!(batch.schema(), primary_keys_schema());
        let column = |i: usize| -> Vec<String> {
            let c = batch.column(i);
            (0..c.len())
                .map(|r| arrow::util::display::array_value_to_string(c, r).unwrap())
                .collect()
        };
        assert_eq!(column(3), ["host", "region", "time"]);
        assert_eq!(column(5), ["1", "2", "3"]);
        assert_eq!(column(1), ["db", "db", "db"]);
        assert_eq!(column(4), [PRIMARY_KEY_NAME; 3]);
    }

    #[test]
    fn the_sql_types_cover_every_column_type() {
        let types = xdbc_types().unwrap();
        let batch = types.record_batch(None).unwrap();
        let names = arrow::compute::cast(batch.column(0), &DataType::Utf8).unwrap();
        let names: Vec<String> = (0..names.len())
            .map(|r| arrow::util::display::array_value_to_string(&names, r).unwrap())
            .collect();
        for name in [
            "BOOLEAN",
            "DOUBLE",
            "BIGINT",
            "BIGINT UNSIGNED",
            "VARCHAR",
            "TIMESTAMP",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        assert_eq!(foreign_keys_schema().fields().len(), 13);
    }
}
