//! Reading the target table from the catalog and checking the column
//! mapping against it, so a sink that builds can write every value that
//! passes [`TablePlan::row`] (records become rows in `values`).
//!
//! [`check_table`] runs when the sink is built (the pipeline loader does no
//! network I/O) and returns a [`TablePlan`]: the SQL to write a batch and, per
//! column, how a JSON value becomes the column's text form. Values travel as
//! one `text[]` parameter per column and are cast to the column type in the
//! statement (`INSERT … SELECT CAST(v AS type) FROM unnest($1::text[], …)`),
//! so a whole batch is one statement whatever its size.

use std::collections::BTreeSet;

use spate_connector::config::did_you_mean;
use spate_connector::{ConfigError, Span};

use crate::config::{quote_ident, ColumnMapping, FieldSource, SinkConfig, TableName};

mod values;

/// How a column's values are checked and rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `smallint`, `integer`, `bigint`, with their range.
    Int {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
    },
    /// `real`, `double precision`.
    Float,
    /// `numeric`.
    Numeric,
    /// `boolean`.
    Bool,
    /// `text`, `varchar(n)`, `char(n)`, `name`, `citext`.
    Text {
        /// Most characters, if limited.
        max_chars: Option<usize>,
    },
    /// `json`, `jsonb`.
    Json,
    /// `uuid`.
    Uuid,
    /// `timestamp` (`tz: false`) or `timestamptz`.
    Timestamp {
        /// With time zone.
        tz: bool,
    },
    /// `date`.
    Date,
    /// `bytea`.
    Bytea,
    /// Any other scalar type (enums, `inet`, `interval`, `time`, …): text
    /// passes through and the server checks it.
    Other,
    /// Arrays, composite, range and pseudo types: not writable from a
    /// mapping.
    Unsupported,
}

/// One column of the table, from the catalog.
#[derive(Debug, Clone)]
pub struct TableColumn {
    /// Column name.
    pub name: String,
    /// `format_type` of its type (`character varying(16)`).
    pub sql_type: String,
    /// How values are rendered.
    pub kind: ColumnKind,
    /// `NOT NULL`.
    pub not_null: bool,
    /// The default expression, if any.
    pub default: Option<String>,
    /// Generated (`GENERATED ALWAYS AS`) or `GENERATED ALWAYS AS IDENTITY`.
    pub generated: bool,
}

/// A mapped column, ready for writing.
#[derive(Debug, Clone)]
pub struct PlannedColumn {
    /// The mapping entry.
    pub mapping: ColumnMapping,
    /// The table column.
    pub column: TableColumn,
}

/// The checked mapping of one sink onto its table.
#[derive(Debug)]
pub struct TablePlan {
    /// The table as configured.
    pub table: TableName,
    /// Mapped columns, in mapping order (the row layout).
    pub columns: Vec<PlannedColumn>,
    /// Positions in `columns` of the upsert key (empty: plain insert).
    pub key: Vec<usize>,
    /// The batch statement: one `text[]` parameter per column.
    pub insert_sql: String,
}

/// One row: the text form of each mapped column (`None`: SQL NULL, or the
/// column default when it has one).
pub type Row = Vec<Option<String>>;

/// Reads `config.table` from the catalog and checks the mapping against it:
/// every mapped column exists, is writable and can take its source; every
/// NOT NULL column without a default is mapped; `key` is exactly the columns
/// of a primary key or unique index. A mismatch is
/// [`CheckError::Mapping`], with each problem at its place in the pipeline
/// file.
pub async fn check_table(
    client: &tokio_postgres::Client,
    config: &SinkConfig,
) -> Result<TablePlan, CheckError> {
    let table = &config.table;
    let oid: Option<u32> = client
        .query_opt(
            "SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass($1::text) AND c.relkind IN ('r', 'p')",
            &[&table.quoted()],
        )
        .await
        .map_err(CheckError::from_pg)?
        .map(|row| row.get(0));
    let Some(oid) = oid else {
        return Err(CheckError::Mapping(vec![problem(
            config.table_span,
            config.path.clone() + ".table",
            format!(
                "table `{table}` does not exist (or is not a table) in {}",
                config.connection.display()
            ),
            Some("create it first (the example pipelines' tables are in pipelines/sql/), or check the schema and the connection's database".to_owned()),
        )]));
    };
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), bt.typname::text, \
                    bt.typtype::text, bt.typcategory::text, a.attnotnull, \
                    pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text, a.attidentity::text, \
                    a.atttypmod \
             FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(CheckError::from_pg)?;
    let table_columns: Vec<TableColumn> = rows
        .iter()
        .map(|row| {
            let typname: String = row.get(2);
            let typtype: String = row.get(3);
            let category: String = row.get(4);
            let typmod: i32 = row.get(9);
            let generated: String = row.get(7);
            let identity: String = row.get(8);
            TableColumn {
                name: row.get(0),
                sql_type: row.get(1),
                kind: column_kind(&typname, &typtype, &category, typmod),
                not_null: row.get(5),
                default: row.get(6),
                generated: !generated.is_empty() || identity == "a",
            }
        })
        .collect();
    let unique_sets = unique_column_sets(client, oid)
        .await
        .map_err(CheckError::from_pg)?;
    plan(config, table_columns, &unique_sets).map_err(CheckError::Mapping)
}

/// The column sets of a table's unique indexes (its primary key among
/// them), each a set of column names; partial and expression indexes are
/// left out, since an upsert cannot name them as its conflict target.
pub(crate) async fn unique_column_sets(
    client: &impl tokio_postgres::GenericClient,
    oid: u32,
) -> Result<Vec<BTreeSet<String>>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT array_agg(a.attname::text) FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL \
             GROUP BY i.indexrelid",
            &[&oid],
        )
        .await?
        .iter()
        .map(|row| row.get::<_, Vec<String>>(0).into_iter().collect())
        .collect())
}

/// Why [`check_table`] failed.
#[derive(Debug)]
pub enum CheckError {
    /// The database could not be asked; trying again may help.
    Unavailable(String),
    /// The mapping does not fit the table: every problem, at its place in
    /// the pipeline file.
    Mapping(Vec<ConfigError>),
}

impl CheckError {
    fn from_pg(e: tokio_postgres::Error) -> Self {
        Self::Unavailable(crate::describe_pg_error(&e))
    }
}

fn column_kind(typname: &str, typtype: &str, category: &str, typmod: i32) -> ColumnKind {
    if category == "A" || matches!(typtype, "c" | "r" | "m" | "p") {
        return ColumnKind::Unsupported;
    }
    match typname {
        "int2" => ColumnKind::Int {
            min: i16::MIN.into(),
            max: i16::MAX.into(),
        },
        "int4" => ColumnKind::Int {
            min: i32::MIN.into(),
            max: i32::MAX.into(),
        },
        "int8" => ColumnKind::Int {
            min: i64::MIN,
            max: i64::MAX,
        },
        "float4" | "float8" => ColumnKind::Float,
        "numeric" => ColumnKind::Numeric,
        "bool" => ColumnKind::Bool,
        "text" | "name" | "citext" => ColumnKind::Text { max_chars: None },
        "varchar" | "bpchar" => ColumnKind::Text {
            max_chars: (typmod > 4).then(|| (typmod - 4) as usize),
        },
        "json" | "jsonb" => ColumnKind::Json,
        "uuid" => ColumnKind::Uuid,
        "timestamptz" => ColumnKind::Timestamp { tz: true },
        "timestamp" => ColumnKind::Timestamp { tz: false },
        "date" => ColumnKind::Date,
        "bytea" => ColumnKind::Bytea,
        _ => ColumnKind::Other,
    }
}

/// A mapping problem at a place in the pipeline file.
fn problem(span: Span, path: String, message: String, hint: Option<String>) -> ConfigError {
    ConfigError {
        span,
        path,
        message,
        hint,
    }
}

/// Checks the mapping against the table's columns and unique indexes;
/// every problem, each at its place in the pipeline file.
pub fn plan(
    config: &SinkConfig,
    table_columns: Vec<TableColumn>,
    unique_sets: &[BTreeSet<String>],
) -> Result<TablePlan, Vec<ConfigError>> {
    let table = &config.table;
    let mut problems = Vec::new();
    let mut columns = Vec::new();
    for mapping in &config.columns {
        match plan_column(table, mapping, &table_columns) {
            Ok(column) => columns.push(column),
            Err(problem) => problems.push(problem),
        }
    }
    for column in &table_columns {
        if column.not_null
            && column.default.is_none()
            && !column.generated
            && !config.columns.iter().any(|m| m.column == column.name)
        {
            problems.push(problem(
                config.columns_span,
                config.path.clone() + ".columns",
                format!(
                    "column `{}` of table {table} is NOT NULL without a default, and `columns` does not map it",
                    column.name
                ),
                Some(format!("map it: `{}: /field`", column.name)),
            ));
        }
    }
    if !config.key.is_empty() {
        let wanted: BTreeSet<String> = config.key.iter().map(|(k, _)| k.clone()).collect();
        if !unique_sets.contains(&wanted) {
            let (_, span) = &config.key[0];
            let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
            problems.push(problem(
                *span,
                config.path.clone() + ".key",
                format!(
                    "table {table} has no primary key or unique index on exactly ({}); an upsert needs one",
                    names.join(", ")
                ),
                Some(format!(
                    "create one (`CREATE UNIQUE INDEX ON {table} ({})`), or list the columns of an existing one",
                    names.join(", ")
                )),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let key: Vec<usize> = config
        .key
        .iter()
        .filter_map(|(k, _)| columns.iter().position(|c| c.mapping.column == *k))
        .collect();
    let insert_sql = insert_sql(table, &columns, &key);
    Ok(TablePlan {
        table: table.clone(),
        columns,
        key,
        insert_sql,
    })
}

/// Checks one column mapping against the table's columns: the column
/// exists, is not generated, and can take what the mapping writes.
fn plan_column(
    table: &TableName,
    mapping: &ColumnMapping,
    table_columns: &[TableColumn],
) -> Result<PlannedColumn, ConfigError> {
    let at = |message: String, hint: Option<String>| {
        problem(mapping.span, mapping.path.clone(), message, hint)
    };
    let Some(column) = table_columns.iter().find(|c| c.name == mapping.column) else {
        let hint = did_you_mean(
            &mapping.column,
            table_columns.iter().map(|c| c.name.as_str()),
        )
        .map(|b| format!("did you mean `{b}`?"))
        .unwrap_or_else(|| {
            let names: Vec<&str> = table_columns.iter().map(|c| c.name.as_str()).collect();
            format!(
                "its columns are {}",
                spate_connector::config::quote_list(&names)
            )
        });
        return Err(at(
            format!("table {table} has no column `{}`", mapping.column),
            Some(hint),
        ));
    };
    if column.generated {
        return Err(at(
            format!(
                "column `{}` of table {table} is generated and cannot be written",
                column.name
            ),
            Some("remove it from `columns`".to_owned()),
        ));
    }
    if let Err(why) = source_fits(&mapping.source, column.kind) {
        return Err(at(
            format!(
                "`{}` cannot be written to column `{}` of type {}: {why}",
                mapping.source.describe(),
                column.name,
                column.sql_type
            ),
            None,
        ));
    }
    Ok(PlannedColumn {
        mapping: mapping.clone(),
        column: column.clone(),
    })
}

/// Whether a record field can ever go into a column of this kind.
fn source_fits(source: &FieldSource, kind: ColumnKind) -> Result<(), &'static str> {
    use ColumnKind as K;
    if kind == K::Unsupported {
        return Err("array, composite and range columns cannot be written from a mapping; use a json or jsonb column");
    }
    match source {
        FieldSource::Pointer(_) => Ok(()),
        FieldSource::Timestamp => match kind {
            K::Timestamp { .. } | K::Date | K::Numeric | K::Float | K::Text { .. } | K::Json => {
                Ok(())
            }
            K::Int { max, .. } if max == i64::MAX => Ok(()),
            _ => Err("the record timestamp is milliseconds since the epoch: use timestamptz, timestamp, date, bigint, numeric or text"),
        },
        FieldSource::Payload => match kind {
            K::Json | K::Text { max_chars: None } | K::Bytea => Ok(()),
            _ => Err("the whole payload goes into json, jsonb, text or bytea"),
        },
        FieldSource::Key | FieldSource::RecordId | FieldSource::Header(_) => match kind {
            K::Bool | K::Json => Err("record keys and headers are text: use text, varchar, bytea, uuid or a numeric type"),
            _ => Ok(()),
        },
    }
}

fn insert_sql(table: &TableName, columns: &[PlannedColumn], key: &[usize]) -> String {
    let names: Vec<String> = columns
        .iter()
        .map(|c| quote_ident(&c.column.name))
        .collect();
    let values: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cast = format!("CAST(u.v{i} AS {})", c.column.sql_type);
            match &c.column.default {
                Some(default) => format!("COALESCE({cast}, {default})"),
                None => cast,
            }
        })
        .collect();
    let params: Vec<String> = (0..columns.len())
        .map(|i| format!("${}::text[]", i + 1))
        .collect();
    let aliases: Vec<String> = (0..columns.len()).map(|i| format!("v{i}")).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({})",
        table.quoted(),
        names.join(", "),
        values.join(", "),
        params.join(", "),
        aliases.join(", ")
    );
    if !key.is_empty() {
        let key_names: Vec<&str> = key.iter().map(|&i| names[i].as_str()).collect();
        let updates: Vec<String> = (0..columns.len())
            .filter(|i| !key.contains(i))
            .map(|i| format!("{0} = EXCLUDED.{0}", names[i]))
            .collect();
        if updates.is_empty() {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO NOTHING",
                key_names.join(", ")
            ));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                key_names.join(", "),
                updates.join(", ")
            ));
        }
    }
    sql
}
