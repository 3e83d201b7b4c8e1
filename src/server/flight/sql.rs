//! The Flight SQL commands: statements and prepared statements (run as SQL queries), and
//! the commands tools browse with (catalogs, schemas, tables, keys, types, `GetSqlInfo`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::IpcWriteOptions;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc,
    Ticket,
};
use futures::{Stream, TryStreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};
use sluice_query::ScalarValue;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::super::auth::Access;
use super::super::error::{query_status, status};
use super::super::query::scalar;
use super::super::state::AppState;
use super::metadata::{
    CATALOG_NAME, PrimaryKeys, TABLE_TYPE, foreign_keys_schema, primary_keys_schema, xdbc_types,
};
use super::sql_info;

/// Batches a parameter binding reads before giving up on finding a row of values.
const MAX_PARAMETER_BATCHES: usize = 16;

/// The Flight SQL commands.
pub struct FlightSql {
    pub(super) state: Arc<AppState>,
    /// `GetSqlInfo`'s answers, made at the first call.
    pub(super) sql_info: std::sync::OnceLock<SqlInfoData>,
}

/// What a Flight SQL statement ticket (or prepared statement handle) holds: the query to
/// run where, and for a prepared statement the parameter values bound to it (as JSON).
/// Sluice keeps no per-statement state: everything is in the handle, and the caller's
/// access is checked again when it runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StatementHandle {
    db: String,
    sql: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    params: Vec<(String, serde_json::Value)>,
}

impl StatementHandle {
    fn decode(bytes: &[u8]) -> Result<Self, Status> {
        serde_json::from_slice(bytes)
            .map_err(|e| Status::invalid_argument(format!("not a Sluice statement handle: {e}")))
    }

    fn encode(&self) -> Result<bytes::Bytes, Status> {
        serde_json::to_vec(self)
            .map(Into::into)
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// The bound parameters as DataFusion values, by placeholder name without its `$`.
    fn param_values(&self) -> Result<HashMap<String, ScalarValue>, Status> {
        self.params
            .iter()
            .map(|(name, v)| Ok((name.clone(), scalar(name, v.clone()).map_err(status)?)))
            .collect()
    }
}

/// A bound parameter's JSON form, from row 0 of `column`.
fn json_of(column: &dyn arrow::array::Array) -> Result<serde_json::Value, Status> {
    let value = ScalarValue::try_from_array(column, 0)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if value.is_null() {
        return Ok(serde_json::Value::Null);
    }
    Ok(match value {
        ScalarValue::Boolean(Some(b)) => b.into(),
        ScalarValue::Int8(Some(v)) => v.into(),
        ScalarValue::Int16(Some(v)) => v.into(),
        ScalarValue::Int32(Some(v)) => v.into(),
        ScalarValue::Int64(Some(v)) => v.into(),
        ScalarValue::UInt8(Some(v)) => v.into(),
        ScalarValue::UInt16(Some(v)) => v.into(),
        ScalarValue::UInt32(Some(v)) => v.into(),
        ScalarValue::UInt64(Some(v)) => v.into(),
        ScalarValue::Float32(Some(v)) => f64::from(v).into(),
        ScalarValue::Float64(Some(v)) => v.into(),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.into(),
        other => {
            return Err(Status::invalid_argument(format!(
                "parameters of type {} are not supported; bind strings, numbers or booleans",
                other.data_type()
            )));
        }
    })
}

/// The JSON ticket of the influxdb3 client libraries.
#[derive(Debug, Deserialize)]
pub(super) struct JsonTicket {
    pub(super) database: String,
    pub(super) sql_query: String,
    #[serde(default)]
    pub(super) query_type: Option<String>,
}

pub(super) type DoGetStream =
    Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

impl FlightSql {
    /// The database the call's metadata names, else the server's default.
    fn database(&self, metadata: &MetadataMap) -> String {
        ["database", "bucket", "bucket-name"]
            .iter()
            .find_map(|k| metadata.get(*k).and_then(|v| v.to_str().ok()))
            .filter(|d| !d.is_empty())
            .map_or_else(|| self.state.config.default_db.clone(), str::to_string)
    }

    /// Runs `sql` in `db` for the caller of `request` and streams the result.
    pub(super) async fn run<T>(
        &self,
        request: &Request<T>,
        db: &str,
        sql: &str,
        params: HashMap<String, ScalarValue>,
    ) -> Result<DoGetStream, Status> {
        let access = access(request)?;
        access.read(db).map_err(status)?;
        let (schema, batches) = self
            .state
            .query
            .query_stream(db, sql, params, access.readable())
            .await
            .map_err(query_status)?;
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches.map_err(|e| FlightError::ExternalError(Box::new(e))))
            .map_err(Status::from);
        Ok(Box::pin(flight))
    }
}

/// `schema` as `DoGet` streams it: dictionary columns (tags) arrive with their values
/// written out (the encoder's default, and what Flight SQL clients such as Grafana's read),
/// and `GetFlightInfo` must announce the same schema.
fn hydrated(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => f.as_ref().clone().with_data_type((**value).clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn access<T>(request: &Request<T>) -> Result<Access, Status> {
    request
        .extensions()
        .get::<Access>()
        .cloned()
        .ok_or_else(|| Status::internal("the call was not authenticated"))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let access = access(&request)?;
        let db = self.database(request.metadata());
        access.read(&db).map_err(status)?;
        let schema = self
            .state
            .query
            .schema_of(&db, &query.query, HashMap::new(), access.readable())
            .await
            .map_err(query_status)?;
        let handle = StatementHandle {
            db,
            sql: query.query,
            ..StatementHandle::default()
        };
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode()?,
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&hydrated(&schema))
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(request.into_inner());
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let handle = StatementHandle::decode(&ticket.statement_handle)?;
        let stream = self
            .run(&request, &handle.db, &handle.sql, HashMap::new())
            .await?;
        Ok(Response::new(stream))
    }

    /// Plans the statement: its result schema, and its parameters (`$1`, `$2`, ... or
    /// `$name`) as the parameter schema, in the order they are bound.
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let access = access(&request)?;
        let db = self.database(request.metadata());
        access.read(&db).map_err(status)?;
        let (schema, params) = self
            .state
            .query
            .prepare(&db, &query.query, access.readable())
            .await
            .map_err(query_status)?;
        let parameter_schema = Schema::new(
            params
                .iter()
                .map(|(name, t)| Field::new(name, t.clone().unwrap_or(DataType::Utf8), true))
                .collect::<Vec<_>>(),
        );
        let handle = StatementHandle {
            db,
            sql: query.query,
            ..StatementHandle::default()
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode()?,
            dataset_schema: ipc_schema(&hydrated(&schema))?,
            parameter_schema: ipc_schema(&hydrated(&parameter_schema))?,
        })
    }

    /// Binds parameter values (one row, a column per parameter in the parameter schema's
    /// order): answers with a new handle that holds them.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle = StatementHandle::decode(&query.prepared_statement_handle)?;
        // The values are the first row sent: reading stops at the first batch with rows (or
        // after a few empty ones), so a client streaming batches does not fill memory.
        let mut stream = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        let mut found: Option<RecordBatch> = None;
        for _ in 0..MAX_PARAMETER_BATCHES {
            match stream.try_next().await.map_err(|e| {
                Status::invalid_argument(format!("the parameters do not decode: {e}"))
            })? {
                Some(b) if b.num_rows() > 0 => {
                    found = Some(b);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        let Some(batch) = found.as_ref() else {
            return Err(Status::invalid_argument("no parameter values were sent"));
        };
        handle.params = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .enumerate()
            .map(|(i, (field, column))| {
                let name = match field.name().strip_prefix('$') {
                    Some(name) => name.to_string(),
                    None => (i + 1).to_string(),
                };
                Ok((name, json_of(column.as_ref())?))
            })
            .collect::<Result<_, Status>>()?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.encode()?),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let access = access(&request)?;
        let handle = StatementHandle::decode(&query.prepared_statement_handle)?;
        access.read(&handle.db).map_err(status)?;
        let params = handle.param_values()?;
        let schema = self
            .state
            .query
            .schema_of(&handle.db, &handle.sql, params, access.readable())
            .await
            .map_err(query_status)?;
        command_info(&query, &hydrated(&schema), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let handle = StatementHandle::decode(&query.prepared_statement_handle)?;
        let params = handle.param_values()?;
        let stream = self.run(&request, &handle.db, &handle.sql, params).await?;
        Ok(Response::new(stream))
    }

    /// Nothing to free: a handle holds all of its statement.
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        let schema = query.into_builder().schema();
        command_info(&query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        access(&request)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG_NAME);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        let schema = query.clone().into_builder().schema();
        command_info(&query, &schema, request.into_inner())
    }

    /// The databases the caller may read, as the schemas of catalog `public`.
    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let access = access(&request)?;
        let mut builder = query.into_builder();
        for db in self.readable_databases(&access) {
            builder.append(CATALOG_NAME, &*db.name);
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        let schema = query.clone().into_builder().schema();
        command_info(&query, &schema, request.into_inner())
    }

    /// The tables of the databases the caller may read (with their Arrow schemas, as queries
    /// return them, when asked).
    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let access = access(&request)?;
        let mut builder = query.into_builder();
        for db in self.readable_databases(&access) {
            for table in db.tables.values() {
                let schema = hydrated(table.arrow_schema());
                builder
                    .append(CATALOG_NAME, &*db.name, &*table.name, TABLE_TYPE, &schema)
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        let schema = query.into_builder().schema();
        command_info(&query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        access(&request)?;
        let mut builder = query.into_builder();
        builder.append(TABLE_TYPE);
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        let schema = query.clone().into_builder(self.sql_info()?).schema();
        command_info(&query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        access(&request)?;
        one_batch(query.into_builder(self.sql_info()?).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        command_info(&query, &primary_keys_schema(), request.into_inner())
    }

    /// A table's primary key: its tags, then `time` (rows of one key are one row: the last
    /// written wins).
    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let access = access(&request)?;
        let mut keys = PrimaryKeys::default();
        if query.catalog.as_deref().is_none_or(|c| c == CATALOG_NAME) {
            for db in self.readable_databases(&access) {
                if query.db_schema.as_deref().is_some_and(|s| s != &*db.name) {
                    continue;
                }
                if let Some(table) = db.tables.get(query.table.as_str()) {
                    keys.append(&db.name, table);
                }
            }
        }
        one_batch(keys.build())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        command_info(&query, &foreign_keys_schema(), request.into_inner())
    }

    /// Tables have no foreign keys: always none.
    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        no_foreign_keys(&request)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        command_info(&query, &foreign_keys_schema(), request.into_inner())
    }

    /// Tables have no foreign keys: always none.
    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        no_foreign_keys(&request)
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        command_info(&query, &foreign_keys_schema(), request.into_inner())
    }

    /// Tables have no foreign keys: always none.
    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        no_foreign_keys(&request)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        access(&request)?;
        let schema = query
            .into_builder(&xdbc_types().map_err(Status::internal)?)
            .schema();
        command_info(&query, &schema, request.into_inner())
    }

    /// The SQL types of Sluice's columns and results, for JDBC's `getTypeInfo`.
    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        access(&request)?;
        one_batch(
            query
                .into_builder(&xdbc_types().map_err(Status::internal)?)
                .build(),
        )
    }
}

impl FlightSql {
    /// What `GetSqlInfo` answers.
    fn sql_info(&self) -> Result<&SqlInfoData, Status> {
        if let Some(info) = self.sql_info.get() {
            return Ok(info);
        }
        let info = sql_info::sql_info(&self.state.query.scalar_functions_by_section())?;
        Ok(self.sql_info.get_or_init(|| info))
    }

    /// The databases `access` may read.
    fn readable_databases(&self, access: &Access) -> Vec<Arc<sluice_storage::DatabaseSchema>> {
        let catalog = self.state.buffer.catalog();
        catalog
            .databases
            .values()
            .filter(|db| {
                access
                    .readable()
                    .is_none_or(|r| r.iter().any(|n| *n == *db.name))
            })
            .cloned()
            .collect()
    }
}

/// The answer to every foreign-key command: none (for a caller with access).
fn no_foreign_keys(request: &Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
    access(request)?;
    one_batch(Ok::<_, Status>(RecordBatch::new_empty(
        foreign_keys_schema(),
    )))
}

/// A `FlightInfo` for a metadata command: its schema, and one endpoint whose ticket is the
/// command itself.
fn command_info(
    command: &impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// `schema` in the IPC form Flight SQL messages carry.
fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

/// A stream of one built batch.
fn one_batch<E: std::fmt::Display>(
    batch: Result<RecordBatch, E>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(flight)))
}
