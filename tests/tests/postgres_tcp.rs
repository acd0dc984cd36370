//! A `tcp` route in front of a real PostgreSQL server, driven by the real `psql`.

use airlock_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_a_tcp_route_is_journaled_byte_for_byte() {
    let pg = Postgres::start().unwrap();
    let mut gw = TestGateway::start(&route("pg", pg.addr(), "")).await.unwrap();
    let addr = gw.addr("pg");
    let out =
        tokio::task::spawn_blocking(move || psql(addr, "select 'hello ' || 'airlock' as greeting, 6 * 7 as answer"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(out.trim(), "hello airlock|42");
    // A second statement on a new connection: two sessions.
    let out = tokio::task::spawn_blocking(move || {
        psql(addr, "create table t(x int); insert into t values (1),(2); select sum(x) from t")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.trim(), "CREATE TABLE\nINSERT 0 2\n3");
    gw.stop().await;

    let list = sessions(gw.data_dir());
    assert_eq!(list.len(), 2, "{list:?}");
    let id = list[0]["id"].as_str().unwrap();
    let frames = replay_json(gw.data_dir(), id);
    let up = direction_bytes(&frames, "client_to_upstream");
    let down = direction_bytes(&frames, "upstream_to_client");
    // The startup message names the user; the simple Query message carries the SQL text.
    assert_eq!(&up[4..8], &196_608u32.to_be_bytes(), "protocol 3.0 startup first");
    let query = b"select 'hello ' || 'airlock' as greeting, 6 * 7 as answer\0";
    let pos = up.windows(query.len()).position(|w| w == query).expect("query text in the journal");
    assert_eq!(up[pos - 5], b'Q');
    // The server's reply carries the row and ends with ReadyForQuery; Terminate closes.
    assert!(down.windows(13).any(|w| w == b"hello airlock"));
    assert_eq!(&down[down.len() - 6..], b"Z\0\0\0\x05I");
    assert_eq!(&up[up.len() - 5..], b"X\0\0\0\x04");
    assert_eq!(list[0]["bytes_from_client"].as_u64().unwrap() as usize, up.len());
    assert_eq!(list[0]["bytes_from_upstream"].as_u64().unwrap() as usize, down.len());

    // The text transcript shows the statement readably.
    let text = airlock(&["replay", id, "--data-dir", &gw.data_dir().display().to_string()]);
    assert!(text.status.success());
    assert!(stdout(&text).contains("select 'hello ' || 'airlock' as greeting"), "{}", stdout(&text));

    let verify = airlock(&["journal", "verify", "--data-dir", &gw.data_dir().display().to_string()]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}
