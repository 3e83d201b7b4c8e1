//! What the server tells Flight SQL clients about itself and its SQL (`GetSqlInfo`): JDBC's
//! `DatabaseMetaData` answers from these, and tools such as DBeaver ask for most of them
//! when they connect.

use std::collections::BTreeMap;

use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel, SqlSupportedCaseSensitivity,
    SqlSupportedGroupBy, SqlSupportedResultSetType, SqlSupportedSubqueries,
    SqlSupportedTransaction, SqlSupportedUnions, SqlSupportsConvert, SqlTransactionIsolationLevel,
    SupportedSqlGrammar,
};
use sluice_query::SQL_KEYWORDS;
use tonic::Status;

/// A bitmask with the bits of `options` set, as Flight SQL encodes sets of enum values.
fn bits(options: &[i32]) -> i32 {
    options.iter().fold(0, |mask, o| mask | (1 << o))
}

/// The conversions `CAST` does between the SQL types Flight SQL names (the Arrow cast
/// kernels DataFusion's `CAST` runs can do each, see the test): numbers and booleans into
/// one another (but booleans not into decimals, nor back) and into text, text into all of
/// them and into times, times into dates, text and back.
fn conversions() -> BTreeMap<i32, Vec<i32>> {
    use SqlSupportsConvert::*;
    let numbers = [
        SqlConvertBigint,
        SqlConvertInteger,
        SqlConvertSmallint,
        SqlConvertTinyint,
        SqlConvertFloat,
        SqlConvertReal,
        SqlConvertDecimal,
        SqlConvertNumeric,
    ];
    let to = |targets: &[SqlSupportsConvert]| targets.iter().map(|t| *t as i32).collect();
    let decimals = [SqlConvertDecimal, SqlConvertNumeric];
    let mut from_number: Vec<SqlSupportsConvert> = numbers.to_vec();
    from_number.extend([SqlConvertBit, SqlConvertVarchar]);
    // booleans and decimals do not convert into one another
    let from_decimal: Vec<_> = from_number
        .iter()
        .copied()
        .filter(|t| *t != SqlConvertBit)
        .collect();
    let from_bit: Vec<_> = from_number
        .iter()
        .copied()
        .filter(|t| !decimals.contains(t))
        .collect();
    let mut from_text = from_number.clone();
    from_text.extend([SqlConvertTimestamp, SqlConvertDate]);
    let mut map: BTreeMap<i32, Vec<i32>> = numbers
        .iter()
        .map(|n| {
            let targets = if decimals.contains(n) {
                &from_decimal
            } else {
                &from_number
            };
            (*n as i32, to(targets))
        })
        .collect();
    map.insert(SqlConvertBit as i32, to(&from_bit));
    map.insert(SqlConvertVarchar as i32, to(&from_text));
    map.insert(
        SqlConvertTimestamp as i32,
        to(&[SqlConvertTimestamp, SqlConvertDate, SqlConvertVarchar]),
    );
    map.insert(
        SqlConvertDate as i32,
        to(&[SqlConvertDate, SqlConvertTimestamp, SqlConvertVarchar]),
    );
    map
}

/// The answers, with the scalar functions by documentation section (see
/// `QueryExecutor::scalar_functions_by_section`).
pub fn sql_info(functions: &BTreeMap<&'static str, Vec<String>>) -> Result<SqlInfoData, Status> {
    let section = |names: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = names
            .iter()
            .flat_map(|n| functions.get(n).into_iter().flatten().cloned())
            .collect();
        all.sort();
        all
    };
    let mut info = SqlInfoDataBuilder::new();
    // the server
    info.append(SqlInfo::FlightSqlServerName, "Sluice");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    // names: schemas are databases; unquoted names are folded to lower case
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    info.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    // quoted names keep their case and match exactly, which none of the choices says
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    info.append(SqlInfo::SqlAllTablesAreSelectable, true);
    info.append(SqlInfo::SqlSchemaTerm, "database");
    info.append(SqlInfo::SqlCatalogTerm, "catalog");
    info.append(SqlInfo::SqlProcedureTerm, "procedure");
    info.append(SqlInfo::SqlCatalogAtStart, true);
    info.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    info.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    info.append(SqlInfo::SqlSearchStringEscape, "\\");
    info.append(SqlInfo::SqlExtraNameCharacters, "");
    // the language
    let keywords: Vec<String> = SQL_KEYWORDS.iter().map(|k| k.to_string()).collect();
    info.append(SqlInfo::SqlKeywords, keywords);
    info.append(SqlInfo::SqlNumericFunctions, section(&["Math Functions"]));
    info.append(
        SqlInfo::SqlStringFunctions,
        section(&[
            "String Functions",
            "Binary String Functions",
            "Regular Expression Functions",
        ]),
    );
    info.append(
        SqlInfo::SqlDatetimeFunctions,
        section(&["Time and Date Functions"]),
    );
    info.append(
        SqlInfo::SqlSystemFunctions,
        section(&[
            "Conditional Functions",
            "Hashing Functions",
            "Other Functions",
        ]),
    );
    info.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    info.append(SqlInfo::SqlSupportsColumnAliasing, true);
    info.append(SqlInfo::SqlNullPlusNullIsNull, true);
    info.append(SqlInfo::SqlSupportsConvert, conversions());
    info.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    info.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    info.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    info.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    info.append(
        SqlInfo::SqlSupportedGroupBy,
        bits(&[
            SqlSupportedGroupBy::SqlGroupByUnrelated as i32,
            SqlSupportedGroupBy::SqlGroupByBeyondSelect as i32,
        ]),
    );
    info.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    info.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    info.append(
        SqlInfo::SqlSupportedGrammar,
        bits(&[
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    info.append(
        SqlInfo::SqlAnsi92SupportedLevel,
        // ANSI92_ENTRY_SQL (arrow-flight does not export the enum)
        bits(&[0]),
    );
    info.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    info.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        bits(&[
            SqlOuterJoinsSupportLevel::SqlLimitedOuterJoins as i32,
            SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
        ]),
    );
    info.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    info.append(SqlInfo::SqlSelectForUpdateSupported, false);
    info.append(SqlInfo::SqlStoredProceduresSupported, false);
    info.append(
        SqlInfo::SqlSupportedSubqueries,
        bits(&[
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    info.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    info.append(
        SqlInfo::SqlSupportedUnions,
        bits(&[
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    // limits: 0 is "none, or not known"
    for limit in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        info.append(limit, 0i64);
    }
    info.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, false);
    // no transactions: every statement reads what is there when it starts
    info.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        SqlTransactionIsolationLevel::SqlTransactionNone as i64,
    );
    info.append(SqlInfo::SqlTransactionsSupported, false);
    info.append(
        SqlInfo::SqlSupportedTransactionsIsolationLevels,
        bits(&[SqlTransactionIsolationLevel::SqlTransactionNone as i32]),
    );
    info.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    info.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, false);
    info.append(
        SqlInfo::SqlSupportedResultSetTypes,
        bits(&[SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    info.append(SqlInfo::SqlBatchUpdatesSupported, false);
    info.append(SqlInfo::SqlSavepointsSupported, false);
    info.append(SqlInfo::SqlNamedParametersSupported, false);
    info.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    info.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    info.build().map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use arrow::compute::can_cast_types;
    use arrow::datatypes::{DataType, TimeUnit};

    use super::*;

    /// The Arrow type a query gives a value of each SQL type Flight SQL names.
    fn arrow_type(t: i32) -> DataType {
        use SqlSupportsConvert::*;
        match SqlSupportsConvert::try_from(t).unwrap() {
            SqlConvertBigint => DataType::Int64,
            SqlConvertInteger => DataType::Int32,
            SqlConvertSmallint => DataType::Int16,
            SqlConvertTinyint => DataType::Int8,
            SqlConvertFloat => DataType::Float64,
            SqlConvertReal => DataType::Float32,
            SqlConvertDecimal | SqlConvertNumeric => DataType::Decimal128(38, 10),
            SqlConvertBit => DataType::Boolean,
            SqlConvertVarchar => DataType::Utf8,
            SqlConvertTimestamp => DataType::Timestamp(TimeUnit::Nanosecond, None),
            SqlConvertDate => DataType::Date32,
            other => panic!("no Arrow type for {other:?}"),
        }
    }

    #[test]
    fn every_conversion_claimed_is_one_cast_can_do() {
        let claimed = conversions();
        assert!(claimed.len() > 10);
        let mut cannot = Vec::new();
        for (from, targets) in &claimed {
            for to in targets {
                let (a, b) = (arrow_type(*from), arrow_type(*to));
                if !can_cast_types(&a, &b) {
                    cannot.push(format!("{a} to {b}"));
                }
            }
        }
        assert!(cannot.is_empty(), "{cannot:?}");
    }
}
