//! The offsets table: one row per partition of each (pipeline, function,
//! source), under the partition's stable name, holding the next offset not
//! yet finished. Rows change only inside a session's commit, under a row
//! lock, after checking they still hold what the session last saw — that
//! check is the fencing.

use std::collections::BTreeMap;

use spate_connector::SessionOwner;
use tokio_postgres::GenericClient;

use super::schema::{ensure_table, Shape, StoreError};
use crate::config::TableName;

/// The offsets table's shape.
pub(crate) const SHAPE: Shape = Shape {
    what: "offsets table",
    columns: &[
        ("pipeline", "text"),
        ("function", "text"),
        ("source", "text"),
        ("partition", "text"),
        ("next_offset", "bigint"),
    ],
    key: &["pipeline", "function", "source", "partition"],
    ddl: "pipeline text NOT NULL, \
          function text NOT NULL, \
          source text NOT NULL, \
          partition text NOT NULL, \
          next_offset bigint NOT NULL CHECK (next_offset >= 0), \
          updated_at timestamptz NOT NULL DEFAULT now(), \
          PRIMARY KEY (pipeline, function, source, partition)",
};

/// Creates the offsets table if it does not exist (and checks the shape of
/// one that does): `(pipeline, function, source, partition text,
/// next_offset bigint, updated_at timestamptz)`, primary key `(pipeline,
/// function, source, partition)`.
pub async fn ensure_offsets_table(
    client: &impl GenericClient,
    table: &TableName,
) -> Result<(), StoreError> {
    ensure_table(client, table, &SHAPE).await
}

/// The stored positions of one source of one function: partition name →
/// next offset.
pub async fn load_offsets(
    client: &impl GenericClient,
    table: &TableName,
    owner: &SessionOwner,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let rows = client
        .query(
            &Sql::new(table).load,
            &[&owner.pipeline, &owner.function, &owner.source],
        )
        .await?;
    decode(table, rows.iter().map(|r| (r.get(0), r.get(1))))
}

/// Offsets as stored (`bigint`) to offsets as the contract counts them.
pub(crate) fn decode(
    table: &TableName,
    rows: impl Iterator<Item = (String, i64)>,
) -> Result<BTreeMap<String, u64>, StoreError> {
    rows.map(|(partition, next)| match u64::try_from(next) {
        Ok(next) => Ok((partition, next)),
        Err(_) => Err(StoreError::Corrupt(format!(
            "the offsets table {table} holds a negative next_offset ({next}) for partition {partition}"
        ))),
    })
    .collect()
}

/// The statements on the offsets table; `$1, $2, $3` are always the
/// owner's pipeline, function and source.
pub(crate) struct Sql {
    /// Every position of the owner.
    pub load: String,
    /// Locks the owner's rows of `$4::text[]` partitions.
    pub lock: String,
    /// Inserts positions of partitions with no row yet (`$4` names, `$5`
    /// offsets); returns the partitions it inserted, so one another session
    /// inserted meanwhile shows as missing.
    pub insert: String,
    /// Moves positions of locked rows (`$4` names, `$5` offsets).
    pub update: String,
}

impl Sql {
    pub(crate) fn new(table: &TableName) -> Self {
        let t = table.quoted();
        let owner = "pipeline = $1 AND function = $2 AND source = $3";
        Self {
            load: format!(
                "SELECT partition, next_offset FROM {t} WHERE {owner} ORDER BY partition"
            ),
            lock: format!(
                "SELECT partition, next_offset FROM {t} \
                 WHERE {owner} AND partition = ANY($4::text[]) FOR UPDATE"
            ),
            insert: format!(
                "INSERT INTO {t} (pipeline, function, source, partition, next_offset) \
                 SELECT $1, $2, $3, u.p, u.o FROM unnest($4::text[], $5::bigint[]) AS u(p, o) \
                 ON CONFLICT (pipeline, function, source, partition) DO NOTHING \
                 RETURNING partition"
            ),
            update: format!(
                "UPDATE {t} AS t SET next_offset = u.o, updated_at = now() \
                 FROM unnest($4::text[], $5::bigint[]) AS u(p, o) \
                 WHERE t.pipeline = $1 AND t.function = $2 AND t.source = $3 AND t.partition = u.p"
            ),
        }
    }
}

/// Why a commit must not move these positions: a partition whose row no
/// longer holds what the session last saw, or `None` when every one does.
pub(crate) fn fenced(
    owner: &SessionOwner,
    stored: &BTreeMap<String, u64>,
    locked: &BTreeMap<String, u64>,
    known: &BTreeMap<String, u64>,
) -> Option<String> {
    let moved: Vec<String> = stored
        .keys()
        .filter(|p| locked.get(*p) != known.get(*p))
        .map(|p| {
            format!(
                "partition {p} holds {} but this session last saw {}",
                show(locked.get(p)),
                show(known.get(p))
            )
        })
        .collect();
    (!moved.is_empty()).then(|| {
        format!(
            "fenced: another process committed positions of source {} of function {} \
             meanwhile ({}); nothing of this transaction was written, and this session stops",
            owner.source,
            owner.function,
            moved.join(", ")
        )
    })
}

fn show(offset: Option<&u64>) -> String {
    offset.map_or_else(|| "nothing".to_owned(), u64::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_or_new_row_fences() {
        let owner = SessionOwner {
            pipeline: "p".into(),
            function: "f".into(),
            source: "kafka:t".into(),
        };
        let map = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(p, o)| ((*p).to_owned(), *o)).collect()
        };
        let known = map(&[("t/0", 5)]);
        assert_eq!(
            fenced(&owner, &map(&[("t/0", 9)]), &map(&[("t/0", 5)]), &known),
            None
        );
        let why = fenced(&owner, &map(&[("t/0", 9)]), &map(&[("t/0", 7)]), &known).unwrap();
        assert!(
            why.contains("partition t/0 holds 7 but this session last saw 5"),
            "{why}"
        );
        let why = fenced(&owner, &map(&[("t/1", 1)]), &map(&[("t/1", 3)]), &known).unwrap();
        assert!(
            why.contains("t/1 holds 3 but this session last saw nothing"),
            "{why}"
        );
        assert_eq!(fenced(&owner, &map(&[("t/1", 1)]), &map(&[]), &known), None);
    }
}
