//! Arrow Flight and Flight SQL on the main port (gRPC over h2c): SQL results as Arrow record
//! batches, streamed as the query computes them.
//!
//! Two ways in:
//! - **Flight SQL** (Grafana's InfluxDB data source in SQL mode, ADBC, JDBC): `GetFlightInfo`
//!   with a `CommandStatementQuery` plans the statement and answers with its schema and one
//!   endpoint, whose ticket `DoGet` then runs.
//!   Tools browse with `GetCatalogs` (one, `public`), `GetDbSchemas` (the databases),
//!   `GetTables`, `GetTableTypes`, `GetSqlInfo`, `GetPrimaryKeys` (tags, then `time`),
//!   `GetXdbcTypeInfo`, and the foreign-key commands (none exist).
//! - **A JSON ticket** (the influxdb3 client libraries): `DoGet` with
//!   `{"database": "...", "sql_query": "...", "query_type": "sql"}` runs the query at once.
//!
//! The database comes from the `database` gRPC metadata (also `bucket` or `bucket-name`, as
//! older clients send it), else the server's default. Tokens come as the `authorization`
//! metadata (see `auth`); a token needs read access to the database. Errors carry the SQL
//! error's message in a gRPC status.
//!
//! Here the Flight service (the JSON ticket, the rest handed to Flight SQL); `sql.rs` the
//! Flight SQL commands; `metadata.rs` and `sql_info.rs` the answers that are not queries,
//! built as batches without gRPC.

mod metadata;
mod sql;
mod sql_info;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, SchemaResult, Ticket,
};
use tonic::{Request, Response, Status, Streaming};

use super::state::AppState;

pub use sql::FlightSql;

use sql::{DoGetStream, JsonTicket};

/// The path prefix of Flight's gRPC methods.
pub const PATH_PREFIX: &str = "/arrow.flight.protocol.FlightService/";

/// The Flight service, ready to be routed.
pub fn service(state: Arc<AppState>) -> FlightServiceServer<Flight> {
    FlightServiceServer::new(Flight {
        sql: FlightSql {
            state,
            sql_info: std::sync::OnceLock::new(),
        },
    })
}

/// Flight: Flight SQL, plus `DoGet` with the influxdb3 clients' JSON tickets.
pub struct Flight {
    sql: FlightSql,
}

#[tonic::async_trait]
impl FlightService for Flight {
    type HandshakeStream = <FlightSql as FlightService>::HandshakeStream;
    type ListFlightsStream = <FlightSql as FlightService>::ListFlightsStream;
    type DoGetStream = DoGetStream;
    type DoPutStream = <FlightSql as FlightService>::DoPutStream;
    type DoExchangeStream = <FlightSql as FlightService>::DoExchangeStream;
    type DoActionStream = <FlightSql as FlightService>::DoActionStream;
    type ListActionsStream = <FlightSql as FlightService>::ListActionsStream;

    /// Tokens travel as `authorization` metadata on every call, so a handshake has nothing
    /// to exchange: it answers with an empty payload (clients that handshake first work).
    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(answer)]))))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        FlightService::list_flights(&self.sql, request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        FlightService::get_flight_info(&self.sql, request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        FlightService::poll_flight_info(&self.sql, request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        FlightService::get_schema(&self.sql, request).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = &request.get_ref().ticket;
        if ticket.first() == Some(&b'{') {
            let t: JsonTicket = serde_json::from_slice(ticket).map_err(|e| {
                Status::invalid_argument(format!(
                    "the ticket is not JSON like {{\"database\": \"db\", \"sql_query\": \
                     \"SELECT 1\", \"query_type\": \"sql\"}}: {e}"
                ))
            })?;
            match t.query_type.as_deref() {
                None | Some("sql") => {}
                Some(other) => {
                    return Err(Status::invalid_argument(format!(
                        "query_type '{other}' is not supported; use \"sql\""
                    )));
                }
            }
            let stream = self
                .sql
                .run(&request, &t.database, &t.sql_query, HashMap::new())
                .await?;
            return Ok(Response::new(stream));
        }
        FlightService::do_get(&self.sql, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.sql, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.sql, request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.sql, request).await
    }
}
