//! The state table: handler state per key of each partition of each
//! (pipeline, function, source), changed only inside a session's commit,
//! together with the positions — so the stored state is always the state
//! after exactly the committed events. Within one transaction the last
//! change of a key wins; all puts go in one upsert and all removals in one
//! delete (unnest arrays), whatever their number.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use spate_connector::{SessionOwner, StateChange};
use tokio_postgres::GenericClient;

use super::schema::{ensure_table, Shape, StoreError};
use crate::config::TableName;

/// The state table's shape.
pub(crate) const SHAPE: Shape = Shape {
    what: "state table",
    columns: &[
        ("pipeline", "text"),
        ("function", "text"),
        ("source", "text"),
        ("partition", "text"),
        ("key", "bytea"),
        ("value", "bytea"),
    ],
    key: &["pipeline", "function", "source", "partition", "key"],
    ddl: "pipeline text NOT NULL, \
          function text NOT NULL, \
          source text NOT NULL, \
          partition text NOT NULL, \
          key bytea NOT NULL, \
          value bytea NOT NULL, \
          updated_at timestamptz NOT NULL DEFAULT now(), \
          PRIMARY KEY (pipeline, function, source, partition, key)",
};

/// Creates the state table if it does not exist (and checks the shape of
/// one that does): `(pipeline, function, source, partition text, key bytea,
/// value bytea, updated_at timestamptz)`, primary key `(pipeline, function,
/// source, partition, key)`.
pub async fn ensure_state_table(
    client: &impl GenericClient,
    table: &TableName,
) -> Result<(), StoreError> {
    ensure_table(client, table, &SHAPE).await
}

/// Every stored state entry of one source of one function: (partition,
/// key) → value.
pub async fn load_stored_state(
    client: &impl GenericClient,
    table: &TableName,
    owner: &SessionOwner,
) -> Result<BTreeMap<(String, Bytes), Bytes>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT partition, key, value FROM {} \
                 WHERE pipeline = $1 AND function = $2 AND source = $3",
                table.quoted()
            ),
            &[&owner.pipeline, &owner.function, &owner.source],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let key: Vec<u8> = r.get(1);
            let value: Vec<u8> = r.get(2);
            ((r.get(0), Bytes::from(key)), Bytes::from(value))
        })
        .collect())
}

/// The statements on the state table; `$1, $2, $3` are always the owner's
/// pipeline, function and source.
pub(crate) struct Sql {
    /// The entries of `$4::text[]` partitions.
    pub load: String,
    /// Upserts `($4 partitions, $5 keys, $6 values)`.
    pub put: String,
    /// Deletes `($4 partitions, $5 keys)`.
    pub remove: String,
}

impl Sql {
    pub(crate) fn new(table: &TableName) -> Self {
        let t = table.quoted();
        Self {
            load: format!(
                "SELECT partition, key, value FROM {t} \
                 WHERE pipeline = $1 AND function = $2 AND source = $3 \
                 AND partition = ANY($4::text[]) ORDER BY partition, key"
            ),
            put: format!(
                "INSERT INTO {t} (pipeline, function, source, partition, key, value) \
                 SELECT $1, $2, $3, u.p, u.k, u.v \
                 FROM unnest($4::text[], $5::bytea[], $6::bytea[]) AS u(p, k, v) \
                 ON CONFLICT (pipeline, function, source, partition, key) \
                 DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
            ),
            remove: format!(
                "DELETE FROM {t} AS s USING unnest($4::text[], $5::bytea[]) AS u(p, k) \
                 WHERE s.pipeline = $1 AND s.function = $2 AND s.source = $3 \
                 AND s.partition = u.p AND s.key = u.k"
            ),
        }
    }
}

/// A transaction's state changes reduced to the last one per (partition,
/// key), as the columns of the put and the remove statements.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reduced<'c> {
    /// Partitions, keys and values to upsert.
    pub put: (Vec<&'c str>, Vec<&'c [u8]>, Vec<&'c [u8]>),
    /// Partitions and keys to delete.
    pub remove: (Vec<&'c str>, Vec<&'c [u8]>),
}

/// Reduces changes (in the order they were made) to the last per key.
pub(crate) fn reduce(changes: &[(String, StateChange)]) -> Reduced<'_> {
    let mut last: HashMap<(&str, &[u8]), usize> = HashMap::with_capacity(changes.len());
    for (i, (partition, change)) in changes.iter().enumerate() {
        last.insert((partition.as_str(), &change.key[..]), i);
    }
    let mut reduced = Reduced::default();
    for (i, (partition, change)) in changes.iter().enumerate() {
        if last.get(&(partition.as_str(), &change.key[..])) != Some(&i) {
            continue;
        }
        match &change.value {
            Some(value) => {
                reduced.put.0.push(partition);
                reduced.put.1.push(&change.key);
                reduced.put.2.push(value);
            }
            None => {
                reduced.remove.0.push(partition);
                reduced.remove.1.push(&change.key);
            }
        }
    }
    reduced
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(partition: &str, key: &str, value: Option<&str>) -> (String, StateChange) {
        (
            partition.to_owned(),
            StateChange {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            },
        )
    }

    #[test]
    fn the_last_change_of_a_key_wins() {
        let changes = vec![
            change("p0", "a", Some("1")),
            change("p0", "b", Some("1")),
            change("p1", "a", Some("x")),
            change("p0", "a", Some("2")),
            change("p0", "b", None),
            change("p1", "c", None),
            change("p1", "c", Some("back")),
        ];
        let r = reduce(&changes);
        assert_eq!(r.put.0, vec!["p1", "p0", "p1"]);
        assert_eq!(r.put.1, vec![&b"a"[..], b"a", b"c"]);
        assert_eq!(r.put.2, vec![&b"x"[..], b"2", b"back"]);
        assert_eq!(r.remove.0, vec!["p0"]);
        assert_eq!(r.remove.1, vec![&b"b"[..]]);
    }
}
