//! Issue 3: stopping the real PostgreSQL server mid-load (`pg_ctlcluster ... stop`), then starting it,
//! loses no usage record and duplicates none. Stops the machine's Postgres, so it only builds with
//! `--features pg-outage`; `scripts/test` runs it alone after every other test.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use http::Method;
use integration_tests::harness::{ConfigBuilder, GatewayUnderTest};
use integration_tests::mock::{Answer, Flavor, MockUpstream, Reply, Usage};
use serde_json::json;

fn pg_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("a PostgreSQL cluster under /etc/postgresql")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version")
}

fn pg_ctl(action: &str) {
    let mut cmd = Command::new("pg_ctlcluster");
    cmd.args(["--skip-systemctl-redirect", &pg_version(), "main", action]);
    if action == "stop" {
        cmd.args(["-m", "fast"]);
    }
    let status = cmd.status().expect("pg_ctlcluster runs");
    assert!(status.success(), "pg_ctlcluster {action} failed");
}

async fn pg() -> tokio_postgres::Client {
    for _ in 0..100 {
        if let Ok((client, conn)) =
            tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", tokio_postgres::NoTls).await
        {
            tokio::spawn(conn);
            return client;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Postgres did not come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_load_loses_and_duplicates_nothing() {
    let schema = format!("it_pg_outage_{}", std::process::id());
    pg().await.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:5432/test?connect_timeout=2&options=-c%20search_path%3D{schema}");

    let openai = MockUpstream::start(Flavor::OpenAi).await;
    openai.always("/v1/chat/completions", Reply::answer(Answer::text("ok").with_usage(Usage::new(10, 2)))).await;
    let yaml = ConfigBuilder::new().provider("openai", &openai).build().replacen(
        "ledger:\n  data_dir: ${DATA_DIR}\n",
        &format!("ledger:\n  data_dir: ${{DATA_DIR}}\n  database_url: \"{url}\"\n"),
        1,
    );
    let gw = GatewayUnderTest::start(&yaml).await;
    let client = gw.client();

    const N: usize = 90;
    let mut ids = HashSet::new();
    let mut stopped = false;
    for i in 0..N {
        if i == 20 {
            pg_ctl("stop");
            stopped = true;
        }
        if i == 60 {
            pg_ctl("start");
            stopped = false;
        }
        let id = format!("req-pg-outage-{i}");
        let r = client
            .raw(
                Method::POST,
                "/v1/chat/completions",
                &[("x-request-id", &id), ("content-type", "application/json")],
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "requests are served while the ledger database is down");
        ids.insert(id);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!stopped);
    let db = pg().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let sql = format!("SELECT request_id FROM {schema}.ledger_records");
    while tokio::time::Instant::now() < deadline {
        let seen = db.query(&sql, &[]).await.map(|r| r.len()).unwrap_or(0);
        if seen >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.shutdown().await;
    let rows: Vec<String> = db.query(&sql, &[]).await.unwrap().iter().map(|r| r.get::<_, String>(0)).collect();
    let unique: HashSet<String> = rows.iter().cloned().collect();
    assert_eq!(rows.len(), unique.len(), "no duplicates");
    assert_eq!(unique, ids, "every request exactly once after the outage");
    db.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
