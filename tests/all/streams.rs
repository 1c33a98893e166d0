//! A stream costs only its own client: one that stops reading is ended after
//! `server.send_timeout` (its pool worker freed, counted once as 499 `client_stalled`), over
//! HTTP/1.1 (the socket stops) and HTTP/2 (only the stream's window closes), and a
//! shutdown cuts it. Events reach the client re-framed per the SSE rules.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{MockUpstream, Outcome, Weir, chat, client, metric, post};

/// A stream far larger than every buffer between the upstream and a client that does not read
/// (sockets on both sides, hyper's, the relay's channels): 8000 chunks of 4 KB.
const BIG_STREAM: &str = "up/m;chunks=8000;pad=4096";

/// Opens a connection with a small receive buffer, sends a streaming chat request and never
/// reads the answer.
async fn stalled_reader(weir: &Weir, tag: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(weir.addr()).await.unwrap();
    let mut body = chat(BIG_STREAM, tag);
    body["stream"] = json!(true);
    let body = serde_json::to_vec(&body).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        weir.addr(),
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body).await.unwrap();
    conn
}

/// Waits (at most 15 s) until the upstream streams to `n` readers and none of them moves for
/// 200 ms short of its end: every buffer on the way is full.
async fn wait_stalled(up: &MockUpstream, n: usize) {
    up.wait_until("the streams started", |s| s.iter().filter(|r| r.chunks_sent > 0).count() == n).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let before: Vec<usize> = up.chats().iter().map(|s| s.chunks_sent).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let chats = up.chats();
        let after: Vec<usize> = chats.iter().map(|s| s.chunks_sent).collect();
        if before == after {
            assert!(chats.iter().all(|s| s.outcome != Outcome::Completed), "a stream ended: {after:?}");
            return;
        }
        assert!(Instant::now() < deadline, "the streams never stalled: {after:?}");
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_frees_its_worker_after_send_timeout() {
    let up = MockUpstream::start().await;
    let pool = "workers = 2\nqueue = 4\nqueue_timeout = \"15s\"\nrequest_timeout = \"30s\"";
    let config = format!("[server]\nsend_timeout = \"3s\"\n{}", up.provider_toml("up", "", pool));
    let weir = Weir::start(&config).await;

    // Two readers that never read hold both workers.
    let mut readers = Vec::new();
    for i in 0..2 {
        readers.push(stalled_reader(&weir, &format!("stall{i}")).await);
    }
    wait_stalled(&up, 2).await;

    // A normal request queues behind them, and waits only until the write timeout ends them.
    let started = Instant::now();
    let url = weir.url("/v1/chat/completions");
    let normal = tokio::spawn(async move { post(&url, &chat("up/m", "after")).await });
    weir.wait_queue_depth("up", 1).await;
    let reply = normal.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(started.elapsed() < Duration::from_secs(8), "served after {:?}", started.elapsed());

    // The stalled streams stopped reading upstream and were counted once each.
    up.wait_until("the stalled streams cancelled upstream", |s| {
        s.iter().filter(|r| r.prompt().starts_with("stall") && r.outcome == Outcome::Cancelled).count() == 2
    })
    .await;
    let labels = [("provider", "up"), ("outcome", "client_stalled"), ("status", "499")];
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&weir.metrics().await, "weir_requests_total", &labels) < 2.0 {
        assert!(Instant::now() < deadline, "not counted:\n{}", weir.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&weir.metrics().await, "weir_requests_total", &labels), 2.0, "counted once each");
    drop(readers);
}

#[tokio::test]
async fn an_http2_stream_its_client_does_not_read_frees_its_worker_after_send_timeout() {
    let up = MockUpstream::start().await;
    let pool = "workers = 1\nqueue = 4\nqueue_timeout = \"15s\"\nrequest_timeout = \"30s\"";
    let config = format!("[server]\nsend_timeout = \"2s\"\n{}", up.provider_toml("up", "", pool));
    let weir = Weir::start(&config).await;

    // Over HTTP/2 the socket keeps moving (the connection stays usable); only the stream's
    // flow-control window closes, once the unread body fills it.
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let mut body = chat(BIG_STREAM, "stall-h2");
    body["stream"] = json!(true);
    let unread = h2.post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(unread.version(), reqwest::Version::HTTP_2);
    wait_stalled(&up, 1).await;

    let started = Instant::now();
    let url = weir.url("/v1/chat/completions");
    let normal = tokio::spawn(async move { post(&url, &chat("up/m", "after")).await });
    weir.wait_queue_depth("up", 1).await;
    let reply = normal.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(started.elapsed() < Duration::from_secs(8), "served after {:?}", started.elapsed());
    let labels = [("provider", "up"), ("outcome", "client_stalled"), ("status", "499")];
    assert_eq!(metric(&weir.metrics().await, "weir_requests_total", &labels), 1.0);
    // The same connection still serves requests.
    let again = h2.post(weir.url("/v1/chat/completions")).json(&chat("up/m", "again")).send().await.unwrap();
    assert_eq!(again.status(), 200);
    drop(unread);
}

#[tokio::test]
async fn sigterm_cuts_streams_blocked_on_clients_that_do_not_read() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[server]\nshutdown_timeout = \"300ms\"\nsend_timeout = \"60s\"\n{}",
        up.provider_toml("up", "", "workers = 2\nrequest_timeout = \"30s\"")
    );
    let mut weir = Weir::start(&config).await;
    let mut readers = Vec::new();
    for i in 0..2 {
        readers.push(stalled_reader(&weir, &format!("stall{i}")).await);
    }
    wait_stalled(&up, 2).await;

    let started = Instant::now();
    weir.sigterm();
    let status = weir.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}:\n{}", weir.logs());
    assert!(started.elapsed() < Duration::from_secs(5), "exited after {:?}", started.elapsed());
    // Each stream was ended by the stop signal and logged once, not dropped with its thread.
    let logs = weir.logs();
    assert_eq!(logs.matches("shutting_down (503)").count(), 2, "{logs}");
    drop(readers);
}

#[tokio::test]
async fn events_are_reframed_per_the_sse_rules() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    let cases = [
        // JSON spread over two `data:` lines (LF, CRLF and CR line ends): each line reaches the
        // client as its own `data:` line, so it joins them back with `\n`.
        ("multiline", "data: {\"id\":\"m\",\ndata: \"choices\":[]}\n\ndata: {\"a\":\ndata: 1}\n\ndata: [DONE]\n\n"),
        // CR CR ends an event and a lone CR ends a line, as the client's parser reads them:
        // Weir relays the events its plugins saw, with no raw CR left to split them otherwise.
        ("lone_cr", "data: {\"n\":1}\n\ndata: {\"n\":2}\ndata: {\"x\":3}\n\ndata: [DONE]\n\n"),
    ];
    for (fixture, want) in cases {
        let mut body = chat(&format!("up/m;sse={fixture}"), "x");
        body["stream"] = json!(true);
        let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{fixture}");
        assert_eq!(resp.text().await.unwrap(), want, "{fixture}");
    }
}
