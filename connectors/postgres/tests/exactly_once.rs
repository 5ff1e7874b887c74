//! The exactly-once session opened by `PgSink::begin_exactly_once`, against
//! a real server: rows in two tables, positions under stable partition
//! names and handler state commit together or not at all; abort; failed
//! commits and the engine's retry; fencing; state. What a session refuses
//! is in `session_checks.rs`, lost COMMIT answers in `in_doubt.rs`, server
//! restarts in `restart.rs`.

use spate_connector::{SessionOwner, Sink, StateEntry, StoredPosition};
use spate_testsupport::postgres::eos::Fixture;
use spate_testsupport::postgres::fixtures::{
    commit_until_ok, dead, output, outputs, owner, put, remove, stored_map, Txn,
};

fn entries(session_state: Vec<StateEntry>) -> Vec<(String, String, String)> {
    session_state
        .into_iter()
        .map(|e| {
            (
                e.partition,
                String::from_utf8(e.key.to_vec()).unwrap(),
                String::from_utf8(e.value.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn triples(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

#[tokio::test]
async fn rows_in_two_tables_positions_and_state_commit_together() {
    let fx = Fixture::new("eos_commit").await;
    let ((out, out_t, mut session), dl) = fx.open_with_dead_letters(&fx.url()).await;
    let dl_t = dl.target.clone();
    assert_eq!(
        out_t.destination,
        format!(
            "{}(device_id=/device, ts, temperature, record_id=$record_id)",
            fx.telemetry
        )
    );
    assert_eq!(out_t.cluster, fx.server.addr.clone() + "/postgres");

    session.accepts(&out_t).expect("its own table");
    session.accepts(&dl_t).expect("the dead-letter table");
    assert!(session.stores_state());
    assert_eq!(session.load_positions().await.unwrap(), vec![]);

    let txn = Txn {
        records: vec![
            (out_t.clone(), output(0, 0, 20.5)),
            (out_t.clone(), output(0, 1, 21.0)),
            (dl_t.clone(), dead(0, 2, "handler-error")),
            (out_t.clone(), output(2, 6, 19.0)),
        ],
        state: vec![
            ("telemetry/0".into(), put("d0", "sum=41.5")),
            ("telemetry/2".into(), put("d2", "sum=19")),
        ],
        positions: vec![(0, 3), (2, 7)],
    };
    txn.write(&mut *session).await;
    // Nothing is visible before the commit.
    assert_eq!(fx.rows().await, vec![]);
    txn.commit(&mut *session).await.expect("committed");

    fx.assert_rows(&[(0, 0), (0, 1), (2, 6)]).await;
    assert_eq!(
        fx.dead_letters().await,
        triples(&[("poison 0/2", "handler-error", "telemetry/0/2/dead-letter")])
    );
    assert_eq!(
        fx.offsets().await,
        stored_map(&[(0, 3), (2, 7)]),
        "the stable names are stored, not the numeric partitions"
    );
    let stored = fx.state().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[&("telemetry/0".to_owned(), "d0".into())],
        &b"sum=41.5"[..]
    );

    // A new session (a restart) resumes from the table.
    let mut again = out.begin_exactly_once(&owner()).await.unwrap();
    assert_eq!(
        again.load_positions().await.unwrap(),
        vec![
            StoredPosition {
                partition: "telemetry/0".into(),
                next_offset: 3
            },
            StoredPosition {
                partition: "telemetry/2".into(),
                next_offset: 7
            },
        ]
    );
    assert_eq!(
        entries(again.load_state(&["telemetry/2".into()]).await.unwrap()),
        triples(&[("telemetry/2", "d2", "sum=19")])
    );
    fx.drop_now().await;
}

#[tokio::test]
async fn abort_leaves_nothing() {
    let fx = Fixture::new("eos_abort").await;
    let ((_out, out_t, mut session), dl) = fx.open_with_dead_letters(&fx.url()).await;
    let aborted = Txn {
        records: vec![
            (out_t.clone(), output(0, 0, 1.0)),
            (dl.target.clone(), dead(0, 1, "timeout")),
        ],
        state: vec![("telemetry/0".into(), put("d0", "x"))],
        positions: vec![],
    };
    aborted.write(&mut *session).await;
    session.abort().await.unwrap();
    // A commit after the abort carries none of it: only these positions.
    Txn {
        positions: vec![(0, 2)],
        ..Txn::default()
    }
    .commit(&mut *session)
    .await
    .unwrap();
    assert_eq!(fx.rows().await, vec![]);
    assert_eq!(fx.dead_letters().await, vec![]);
    assert!(fx.state().await.is_empty());
    fx.assert_offsets(&[(0, 2)]).await;
    // Nothing written and no positions: nothing happens.
    session.commit(&[], &[]).await.unwrap();
    fx.drop_now().await;
}

#[tokio::test]
async fn a_row_the_server_refuses_fails_the_whole_commit_and_the_retry_commits_once() {
    let fx = Fixture::new("eos_refused").await;
    let ((out, out_t, mut session), dl) = fx.open_with_dead_letters(&fx.url()).await;
    // 5000 passes `check` (only the server's CHECK constraint refuses it).
    out.check(&output(1, 1, 5000.0)).expect("fits its column");
    let txn = Txn {
        records: vec![
            (out_t.clone(), output(1, 0, 10.0)),
            (dl.target.clone(), dead(1, 2, "late")),
            (out_t.clone(), output(1, 1, 5000.0)),
        ],
        state: vec![("telemetry/1".into(), put("d1", "n=2"))],
        positions: vec![(1, 3)],
    };
    txn.write(&mut *session).await;
    let err = txn.commit(&mut *session).await.expect_err("refused");
    assert!(err.is_abortable(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("23514") && message.contains("not_too_hot"),
        "{message}"
    );
    fx.assert_nothing_stored().await;

    // The retry fails the same way until the operator fixes the table.
    session.abort().await.unwrap();
    txn.write(&mut *session).await;
    assert!(txn.commit(&mut *session).await.unwrap_err().is_abortable());
    fx.client
        .batch_execute(&format!(
            "ALTER TABLE {} DROP CONSTRAINT not_too_hot",
            fx.telemetry
        ))
        .await
        .unwrap();
    session.abort().await.unwrap();
    txn.write(&mut *session).await;
    let failures = commit_until_ok(&mut *session, &txn, 5).await;
    assert!(failures.is_empty(), "{failures:?}");
    fx.assert_rows(&[(1, 0), (1, 1)]).await;
    assert_eq!(
        fx.dead_letters().await,
        triples(&[("poison 1/2", "late", "telemetry/1/2/dead-letter")])
    );
    fx.assert_offsets(&[(1, 3)]).await;
    assert_eq!(
        fx.state().await[&("telemetry/1".to_owned(), "d1".into())],
        &b"n=2"[..]
    );
    fx.drop_now().await;
}

/// The session's backend, found by the application name in its URL.
async fn backend_of(client: &tokio_postgres::Client, app: &str, waiting: bool) -> Option<i32> {
    let rows = client
        .query(
            "SELECT pid, wait_event_type FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    rows.iter()
        .find(|r| !waiting || r.get::<_, Option<String>>(1).as_deref() == Some("Lock"))
        .map(|r| r.get(0))
}

#[tokio::test]
async fn a_connection_terminated_mid_transaction_writes_nothing_and_the_retry_commits_once() {
    let fx = Fixture::new("eos_kill").await;
    let client = &fx.client;
    let app = spate_testsupport::names::unique("spate_eos_kill");
    let url = format!("{}?application_name={app}", fx.url());
    let (_out, out_t, mut session) = fx.open(&url, &[]).await;
    let first = Txn::stateless(outputs(&out_t, &[(0, 0, 1.0)]), vec![(0, 1)]);
    first.land(&mut *session).await;

    // The second commit blocks on a lock inside its transaction (after it
    // moved the positions), and its backend is terminated there.
    let second = Txn {
        records: outputs(&out_t, &[(0, 1, 2.0), (0, 2, 3.0)]),
        state: vec![("telemetry/0".into(), put("d0", "2"))],
        positions: vec![(0, 3)],
    };
    second.write(&mut *session).await;
    let locker = fx.lock_output().await;
    let committing = second.commit_in_background(session);
    let pid = loop {
        if let Some(pid) = backend_of(client, &app, true).await {
            break pid;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let killed: bool = client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    let (mut session, result) = committing.await.unwrap();
    let err = result.expect_err("the connection was terminated");
    assert!(err.is_abortable(), "{err}");
    locker.batch_execute("ROLLBACK").await.unwrap();
    fx.assert_rows(&[(0, 0)]).await;
    fx.assert_offsets(&[(0, 1)]).await;

    // The engine aborts, writes the same records again and commits: the
    // session reconnects, and everything lands once.
    session.abort().await.unwrap();
    second.write(&mut *session).await;
    let failures = commit_until_ok(&mut *session, &second, 20).await;
    assert!(failures.len() <= 1, "{failures:?}");
    fx.assert_rows(&[(0, 0), (0, 1), (0, 2)]).await;
    fx.assert_offsets(&[(0, 3)]).await;
    assert_eq!(fx.state().await.len(), 1);

    // An idle connection terminated between commits is replaced unseen.
    let pid = backend_of(client, &app, false).await;
    let third = Txn::stateless(outputs(&out_t, &[(0, 3, 4.0)]), vec![(0, 4)]);
    third.write(&mut *session).await;
    if let Some(pid) = pid {
        client
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
    }
    commit_until_ok(&mut *session, &third, 20).await;
    fx.assert_rows(&[(0, 0), (0, 1), (0, 2), (0, 3)]).await;
    fx.drop_now().await;
}

#[tokio::test]
async fn a_second_session_that_committed_the_partition_fences_the_first() {
    let fx = Fixture::new("eos_fence").await;
    let (out, out_t, mut first) = fx.open(&fx.url(), &[]).await;
    let rec = |p, o| (out_t.clone(), output(p, o, 1.0));

    first.load_positions().await.unwrap();
    let t = Txn::stateless(vec![rec(0, 0), rec(0, 1), rec(0, 2)], vec![(0, 3)]);
    t.land(&mut *first).await;

    // Another process takes partition 0 over (and partition 9, which has
    // no row yet, as does the first session's view of it).
    let mut second = out.begin_exactly_once(&owner()).await.unwrap();
    assert_eq!(
        second.load_positions().await.unwrap(),
        vec![StoredPosition {
            partition: "telemetry/0".into(),
            next_offset: 3
        }]
    );
    let t = Txn {
        records: vec![rec(0, 3), rec(0, 4), rec(9, 0)],
        state: vec![("telemetry/0".into(), put("d0", "second"))],
        positions: vec![(0, 5), (9, 1)],
    };
    t.land(&mut *second).await;

    // The first session still thinks partition 0 is at 3: fenced, and
    // nothing of its transaction is written.
    let t = Txn {
        records: vec![rec(0, 3)],
        state: vec![("telemetry/0".into(), put("d0", "first"))],
        positions: vec![(0, 4)],
    };
    t.write(&mut *first).await;
    let err = t.commit(&mut *first).await.expect_err("fenced");
    assert!(!err.is_abortable(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("fenced")
            && message.contains("partition telemetry/0 holds 5 but this session last saw 3"),
        "{message}"
    );
    // It stays stopped.
    let err = first.write(&rec(0, 9).0, rec(0, 9).1).await.unwrap_err();
    assert!(!err.is_abortable());
    assert!(first.commit(&[], &[]).await.is_err());

    // A brand-new partition another session created meanwhile fences too.
    let mut third = out.begin_exactly_once(&owner()).await.unwrap();
    let mut fourth = out.begin_exactly_once(&owner()).await.unwrap();
    let t = Txn::stateless(vec![rec(7, 0)], vec![(7, 1)]);
    t.land(&mut *fourth).await;
    t.write(&mut *third).await;
    let err = t.commit(&mut *third).await.expect_err("fenced");
    assert!(
        !err.is_abortable() && err.to_string().contains("telemetry/7"),
        "{err}"
    );

    fx.assert_rows(&[(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (7, 0), (9, 0)])
        .await;
    fx.assert_offsets(&[(0, 5), (7, 1), (9, 1)]).await;

    // A session that reloads the positions after an assignment (the
    // engine does) takes the new baseline and commits.
    let mut fifth = out.begin_exactly_once(&owner()).await.unwrap();
    let t = Txn::stateless(vec![rec(0, 5)], vec![(0, 6)]);
    t.land(&mut *second).await;
    assert_eq!(fifth.load_positions().await.unwrap()[0].next_offset, 6);
    let t = Txn::stateless(vec![rec(0, 6)], vec![(0, 7)]);
    t.write(&mut *fifth).await;
    t.commit(&mut *fifth)
        .await
        .expect("the refreshed baseline commits");
    assert_eq!(fx.offsets().await["telemetry/0"], 7);
    fx.drop_now().await;
}

#[tokio::test]
async fn state_puts_overwrites_and_removals_load_by_partition() {
    let fx = Fixture::new("eos_state").await;
    let (out, _, mut session) = fx.open(&fx.url(), &[]).await;
    let p = |n: u32| format!("telemetry/{n}");
    let t = Txn {
        records: vec![],
        state: vec![
            (p(0), put("a", "1")),
            (p(0), put("b", "1")),
            (p(1), put("a", "x")),
            (p(2), put("z", "z")),
        ],
        positions: vec![(0, 1), (1, 1), (2, 1)],
    };
    t.land(&mut *session).await;
    let t = Txn {
        records: vec![],
        state: vec![
            (p(0), put("a", "2")), // overwrite
            (p(0), remove("b")),   // removal
            (p(0), put("c", "3")),
            (p(0), remove("c")), // put then removed: absent
            (p(1), remove("a")),
            (p(1), put("a", "y")), // removed then put: present
            (p(0), put("a", "4")), // the last change wins
        ],
        positions: vec![(0, 2), (1, 2)],
    };
    t.land(&mut *session).await;

    assert_eq!(
        entries(session.load_state(&[p(0)]).await.unwrap()),
        triples(&[("telemetry/0", "a", "4")])
    );
    assert_eq!(
        entries(session.load_state(&[p(1), p(0)]).await.unwrap()),
        triples(&[("telemetry/0", "a", "4"), ("telemetry/1", "a", "y")])
    );
    assert_eq!(session.load_state(&[]).await.unwrap(), vec![]);
    assert_eq!(session.load_state(&[p(5)]).await.unwrap(), vec![]);

    // Another function's state is its own.
    let other = SessionOwner {
        function: "other".into(),
        ..owner()
    };
    let mut theirs = out.begin_exactly_once(&other).await.unwrap();
    assert_eq!(theirs.load_state(&[p(0), p(2)]).await.unwrap(), vec![]);
    assert_eq!(theirs.load_positions().await.unwrap(), vec![]);
    let all: Vec<(String, Vec<u8>, Vec<u8>)> = fx
        .state()
        .await
        .into_iter()
        .map(|((p, k), v)| (p, k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(
        all,
        vec![
            (p(0), b"a".to_vec(), b"4".to_vec()),
            (p(1), b"a".to_vec(), b"y".to_vec()),
            (p(2), b"z".to_vec(), b"z".to_vec()),
        ]
    );
    fx.drop_now().await;
}
