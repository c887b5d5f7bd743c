//! The PostgreSQL helpers work as the archive tests will use them: a primary, a streaming
//! replica that follows it, a crash and restart, and promotion of the replica.

use std::time::Duration;

use tspi_test_support::PgServer;

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    let reached = tspi_test_support::wait_until_blocking(Duration::from_secs(30), f);
    assert!(reached.is_some(), "timed out waiting for {what}");
}

#[test]
fn primary_replica_crash_and_failover() {
    let mut primary = PgServer::start_primary();
    let db = primary.create_database("t");
    primary.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );

    let replica = PgServer::start_replica(&primary);
    assert_eq!(replica.psql("postgres", "SELECT pg_is_in_recovery()"), "t");
    primary.psql(&db, "INSERT INTO t VALUES (2)");
    wait_for("replication", || {
        replica.psql(&db, "SELECT count(*) FROM t") == "2"
    });

    primary.restart();
    assert_eq!(
        primary.psql(&db, "SELECT count(*) FROM t"),
        "2",
        "committed rows survive a crash"
    );

    primary.kill();
    replica.promote();
    replica.psql(&db, "INSERT INTO t VALUES (3)");
    assert_eq!(replica.psql(&db, "SELECT count(*) FROM t"), "3");
}

/// A crash with clients connected: their backends outlive the SIGKILLed postmaster
/// until they notice (a busy one only when its query ends), and a restart must wait for
/// them instead of failing on the shared memory they still hold (seen in CI as
/// "pre-existing shared memory block is still in use").
#[test]
fn restart_after_crash_with_clients_connected() {
    let mut primary = PgServer::start_primary();
    let db = primary.create_database("t");
    primary.psql(&db, "CREATE TABLE t (id int PRIMARY KEY)");
    for round in 0..3 {
        let mut clients = vec![
            primary.background_query(&db, "SELECT count(*) FROM generate_series(1, 20000000)")
        ];
        clients.extend((0..3).map(|_| primary.background_query(&db, "SELECT pg_sleep(3600)")));
        wait_for("the queries to run", || {
            primary.psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = '{db}' AND state = 'active' AND query LIKE 'SELECT%'"
                ),
            ) == "4"
        });
        primary.psql(&db, &format!("INSERT INTO t VALUES ({round})"));
        primary.restart();
        drop(clients);
        assert_eq!(
            primary.psql(&db, "SELECT count(*) FROM t"),
            (round + 1).to_string(),
            "round {round}: committed rows survive the crash"
        );
    }
}
