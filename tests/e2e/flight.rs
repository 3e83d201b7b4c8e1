//! Arrow Flight SQL and the influxdb3 clients' JSON-ticket `DoGet`, with arrow-flight's own
//! Rust clients, on the main port.

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{FlightClient, Ticket};
use futures::TryStreamExt;
use reqwest::StatusCode;
use serde_json::json;
use tonic::transport::Channel;

use crate::common::{Server, python, python_json};

pub(crate) async fn channel(s: &Server) -> Channel {
    Channel::from_shared(s.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `sql` in `db` over HTTP, as the pretty table.
async fn over_http(s: &Server, db: &str, sql: &str) -> String {
    let (status, body) = s.query_raw(db, sql, "pretty").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.trim_end().to_string()
}

fn pretty(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

/// Runs `sql` as a Flight SQL statement: `GetFlightInfo` (one endpoint), then `DoGet` of its
/// ticket. Returns the announced schema and the batches.
async fn statement(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> (arrow::datatypes::Schema, Vec<RecordBatch>) {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    assert_eq!(info.endpoint.len(), 1);
    let schema = info.clone().try_decode_schema().unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = client.do_get(ticket).await.unwrap();
    (schema, stream.try_collect().await.unwrap())
}

/// Creates the server's first (admin) token, then with it a token that may read `db`, and
/// returns the latter.
async fn first_tokens_then_reader_of(s: &Server, db: &str) -> String {
    let (st, admin) = s.post("/api/v3/configure/token/admin", "").await;
    assert_eq!(st, StatusCode::CREATED, "{admin}");
    let admin: serde_json::Value = serde_json::from_str(&admin).unwrap();
    let r = s
        .client
        .post(s.at("/api/v3/configure/token"))
        .bearer_auth(admin["token"].as_str().unwrap())
        .json(&json!({"read": [db]}))
        .send()
        .await
        .unwrap();
    let reader: serde_json::Value = r.json().await.unwrap();
    reader["token"].as_str().unwrap().to_string()
}

const SQL: &str = "SELECT host, usage, time FROM cpu ORDER BY host";

#[tokio::test]
async fn a_flight_sql_statement_answers_what_http_answers() {
    let s = Server::start();
    s.write_lp(
        "fl",
        "cpu,host=a usage=1.5 1767225600000000000\ncpu,host=b usage=2 1767225601000000000",
    )
    .await;
    let mut client = FlightSqlServiceClient::new(channel(&s).await);
    client.set_header("database", "fl");
    let (schema, batches) = statement(&mut client, SQL).await;
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["host", "usage", "time"]);
    // what `DoGet` sends: the tag's values written out, not a dictionary
    assert_eq!(
        schema.field(0).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    assert_eq!(pretty(&batches), over_http(&s, "fl", SQL).await);
    assert_eq!(batches[0].schema().as_ref(), &schema);

    // the older metadata name for the database, and errors as statuses with SQL's message
    let mut client = FlightSqlServiceClient::new(channel(&s).await);
    client.set_header("bucket-name", "fl");
    let e = client
        .execute("SELECT nope FROM cpu".into(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    client.set_header("bucket-name", "missing");
    let e = client.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(
        e.to_string().contains("database 'missing' not found"),
        "{e}"
    );
}

#[tokio::test]
async fn a_json_ticket_runs_its_query_as_the_influxdb3_clients_send_it() {
    let s = Server::start();
    s.write_lp("fl", "cpu,host=a usage=1.5 1767225600000000000")
        .await;
    let mut client = FlightClient::new(channel(&s).await);
    let ticket = json!({"database": "fl", "sql_query": SQL, "query_type": "sql"});
    let stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!(pretty(&batches), over_http(&s, "fl", SQL).await);
    let bad = json!({"database": "fl", "sql_query": "SHOW MEASUREMENTS", "query_type": "influxql"});
    let e = client
        .do_get(Ticket::new(bad.to_string()))
        .await
        .expect_err("influxql is refused");
    assert!(e.to_string().contains("query_type 'influxql'"), "{e}");
}

#[tokio::test]
async fn a_large_result_streams_in_many_batches() {
    let s = Server::start();
    let lines: String = (0..50_000)
        .map(|i| {
            format!(
                "m,host=h{} v={i} {}\n",
                i % 10,
                1_767_225_600_000_000_000i64 + i
            )
        })
        .collect();
    s.write_lp("big", &lines).await;
    let mut client = FlightClient::new(channel(&s).await);
    let ticket = json!({"database": "big", "sql_query": "SELECT * FROM m", "query_type": "sql"});
    let mut stream = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .unwrap();
    let (mut rows, mut batches) = (0, 0);
    while let Some(b) = stream.try_next().await.unwrap() {
        rows += b.num_rows();
        batches += 1;
    }
    assert_eq!(rows, 50_000);
    assert!(batches > 1, "{batches}");
}

#[tokio::test]
async fn flight_calls_need_a_token_with_read_access_once_tokens_exist() {
    let s = Server::start();
    s.write_lp("a", "cpu,host=x usage=1 1").await;
    s.write_lp("b", "cpu,host=y usage=1 1").await;
    let reader = first_tokens_then_reader_of(&s, "a").await;

    let mut client = FlightSqlServiceClient::new(channel(&s).await);
    client.set_header("database", "a");
    let e = client.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(e.to_string().contains("requires a token"), "{e}");
    client.set_token(reader.clone());
    let (_, batches) = statement(&mut client, "SELECT count(*) AS n FROM cpu").await;
    assert_eq!(batches[0].num_rows(), 1);
    client.set_header("database", "b");
    let e = client.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(e.to_string().contains("may not read database 'b'"), "{e}");

    let mut client = FlightClient::new(channel(&s).await);
    client
        .add_header("authorization", &format!("Bearer {reader}"))
        .unwrap();
    let ticket = json!({"database": "b", "sql_query": "SELECT 1"});
    let e = client
        .do_get(Ticket::new(ticket.to_string()))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("may not read database 'b'"), "{e}");
}

/// The influxdb3 Python client writes line protocol and queries it back over Flight, and
/// ADBC's Flight SQL driver (the Go client Grafana's data source uses) runs the same SQL;
/// both answer what `/api/v3/query_sql` answers.
#[tokio::test]
async fn the_influxdb3_python_client_and_adbc_read_what_http_reads() {
    let Some(python) = python(
        "the influxdb3-python and ADBC clients",
        "influxdb3-python and adbc-driver-flightsql",
    ) else {
        return;
    };
    let s = Server::start();
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let script = r#"
import json, sys
url, port = sys.argv[1], sys.argv[2]
from influxdb_client_3 import InfluxDBClient3
client = InfluxDBClient3(host=url, database="py", token="")
client.write(record="cpu,host=a,region=eu usage=1.5 1767225600000000000\ncpu,host=b,region=us usage=2.5 1767225601000000000")
sql = "SELECT host, region, usage FROM cpu ORDER BY host"
via_client = client.query(sql, language="sql").to_pylist()
import adbc_driver_flightsql.dbapi as flightsql
import warnings
warnings.simplefilter("ignore")
conn = flightsql.connect(f"grpc://127.0.0.1:{port}",
                         db_kwargs={"adbc.flight.sql.rpc.call_header.database": "py"})
cur = conn.cursor()
cur.execute(sql)
via_adbc = cur.fetch_arrow_table().to_pylist()
cur.execute("SELECT host FROM cpu WHERE usage > $1 ORDER BY host", parameters=(2.0,))
bound = cur.fetch_arrow_table().to_pylist()
print(json.dumps({"influxdb3": via_client, "adbc": via_adbc, "bound": bound}))
"#;
    let got = python_json(&python, script, &[s.url.as_ref(), port.as_ref()]);
    let http = serde_json::Value::Array(
        s.sql("py", "SELECT host, region, usage FROM cpu ORDER BY host")
            .await,
    );
    assert_eq!(got["influxdb3"], http);
    assert_eq!(got["adbc"], http);
    assert_eq!(got["bound"], json!([{"host": "b"}]));
}

/// The rows of `info`'s one endpoint.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: arrow_flight::FlightInfo,
) -> Vec<RecordBatch> {
    assert_eq!(info.endpoint.len(), 1);
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = client.do_get(ticket).await.unwrap();
    stream.try_collect().await.unwrap()
}

/// The string list a `GetSqlInfo` answer holds for `which`.
fn string_list_info(batches: &[RecordBatch], which: arrow_flight::sql::SqlInfo) -> Vec<String> {
    use arrow::array::{Array, AsArray, UInt32Array, UnionArray};
    for b in batches {
        let names = b.column(0).as_any().downcast_ref::<UInt32Array>().unwrap();
        let values = b.column(1).as_any().downcast_ref::<UnionArray>().unwrap();
        for row in 0..b.num_rows() {
            if names.value(row) != which as u32 {
                continue;
            }
            let list = values.value(row);
            let list = list.as_list::<i32>();
            let items = list.value(0);
            return items
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect();
        }
    }
    panic!("no answer for {which:?}")
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Column `name` of `batches` as strings.
fn strings(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column_by_name(name).unwrap();
            let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
            let column = column
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap()
                .clone();
            column
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What a generic Flight SQL tool (DBeaver, JDBC, ADBC) asks to browse: catalogs, schemas
/// (the databases the token may read), tables with their schemas, table types, server info.
#[tokio::test]
async fn flight_sql_tools_can_browse_databases_and_tables() {
    use arrow_flight::sql::{
        CommandGetDbSchemas, CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetTables,
        CommandGetXdbcTypeInfo, SqlInfo,
    };
    let s = Server::start();
    s.write_lp("a", "cpu,host=x usage=1 1\nmem,host=x used=2 1")
        .await;
    s.write_lp("b", "disk,host=y free=3 1").await;
    let mut client = FlightSqlServiceClient::new(channel(&s).await);

    let info = client.get_catalogs().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "catalog_name"),
        ["public"]
    );
    let info = client
        .get_db_schemas(CommandGetDbSchemas::default())
        .await
        .unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "db_schema_name"),
        ["a", "b"]
    );
    let info = client
        .get_tables(CommandGetTables {
            db_schema_filter_pattern: Some("a".into()),
            include_schema: true,
            ..CommandGetTables::default()
        })
        .await
        .unwrap();
    let tables = fetch(&mut client, info).await;
    assert_eq!(strings(&tables, "table_name"), ["cpu", "mem"]);
    assert_eq!(strings(&tables, "table_type"), ["BASE TABLE", "BASE TABLE"]);
    // each table's schema, as its queries return it
    let bytes = tables[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .unwrap()
        .value(0)
        .to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&bytes).unwrap();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["host", "time", "usage"]);
    let info = client.get_table_types().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "table_type"),
        ["BASE TABLE"]
    );
    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    // everything JDBC's DatabaseMetaData reads: real lists of keywords and functions
    let info = client.get_sql_info(vec![]).await.unwrap();
    let all = fetch(&mut client, info).await;
    assert!(rows(&all) > 80, "{} answers", rows(&all));
    let numeric = string_list_info(&all, SqlInfo::SqlNumericFunctions);
    assert!(numeric.iter().any(|f| f == "abs"), "{numeric:?}");
    let dates = string_list_info(&all, SqlInfo::SqlDatetimeFunctions);
    assert!(dates.iter().any(|f| f == "date_bin"), "{dates:?}");
    let keywords = string_list_info(&all, SqlInfo::SqlKeywords);
    assert!(keywords.iter().any(|k| k == "SELECT"), "{keywords:?}");
    // JDBC's getPrimaryKeys: the tags, then time (what deduplicates rows)
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("a".into()),
            table: "cpu".into(),
        })
        .await
        .unwrap();
    let keys = fetch(&mut client, info).await;
    assert_eq!(strings(&keys, "column_name"), ["host", "time"]);
    assert_eq!(strings(&keys, "db_schema_name"), ["a", "a"]);
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("b".into()),
            table: "cpu".into(),
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await), 0);
    // no foreign keys, and the SQL types of the columns
    let info = client
        .get_imported_keys(CommandGetImportedKeys {
            catalog: None,
            db_schema: Some("a".into()),
            table: "cpu".into(),
        })
        .await
        .unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert!(schema.column_with_name("fk_table_name").is_some());
    assert_eq!(rows(&fetch(&mut client, info).await), 0);
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let mut types = strings(&fetch(&mut client, info).await, "type_name");
    types.sort();
    assert_eq!(
        types,
        [
            "BIGINT",
            "BIGINT UNSIGNED",
            "BOOLEAN",
            "DOUBLE",
            "TIMESTAMP",
            "VARCHAR"
        ]
    );

    // a token that reads only `b` sees only `b`
    client.set_token(first_tokens_then_reader_of(&s, "b").await);
    let info = client
        .get_tables(CommandGetTables::default())
        .await
        .unwrap();
    assert_eq!(
        strings(&fetch(&mut client, info).await, "table_name"),
        ["disk"]
    );
}

/// JDBC and ADBC run every query as a prepared statement: planned once, parameters bound by
/// position, then executed.
#[tokio::test]
async fn prepared_statements_bind_their_parameters() {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let s = Server::start();
    s.write_lp(
        "fl",
        "cpu,host=a usage=1 1\ncpu,host=b usage=5 2\ncpu,host=c usage=9 3",
    )
    .await;
    let mut client = FlightSqlServiceClient::new(channel(&s).await);
    client.set_header("database", "fl");
    let sql = "SELECT host FROM cpu WHERE usage > $1 AND host <> $2 ORDER BY host";
    let mut stmt = client.prepare(sql.to_string(), None).await.unwrap();
    let params: Vec<_> = stmt
        .parameter_schema()
        .unwrap()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        params,
        [
            ("$1".to_string(), DataType::Float64),
            ("$2".to_string(), DataType::Utf8)
        ]
    );
    let names: Vec<_> = stmt
        .dataset_schema()
        .unwrap()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["host"]);
    for (min, not, want) in [
        (2.0, "x", vec!["b", "c"]),
        (2.0, "c", vec!["b"]),
        (0.0, "x", vec!["a", "b", "c"]),
    ] {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Float64, false),
            Field::new("$2", DataType::Utf8, false),
        ]));
        let values = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Float64Array::from(vec![min])),
                Arc::new(StringArray::from(vec![not])),
            ],
        )
        .unwrap();
        stmt.set_parameters(values).unwrap();
        let info = stmt.execute().await.unwrap();
        let batches = fetch(&mut client, info).await;
        assert_eq!(strings(&batches, "host"), want, "{min} {not}");
    }
    stmt.close().await.unwrap();
}
