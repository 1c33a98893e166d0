//! Graceful shutdown on SIGTERM: stop accepting, finish in-flight and queued requests, exit 0;
//! past `shutdown_timeout`, what is left is answered 503 rather than lost.

use std::time::Duration;

use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use crate::support::{MockUpstream, Reply, Weir, chat, post};

fn send(weir: &Weir, model: &str, tag: &str) -> JoinHandle<Reply> {
    let (url, body) = (weir.url("/v1/chat/completions"), chat(model, tag));
    tokio::spawn(async move { post(&url, &body).await })
}

#[tokio::test]
async fn sigterm_drains_in_flight_and_queued_requests_and_exits_0() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[server]\nshutdown_timeout = \"20s\"\n{}",
        up.provider_toml("up", "", "workers = 2\nqueue = 4\nqueue_timeout = \"20s\"")
    );
    let mut weir = Weir::start(&config).await;

    let mut pending: Vec<_> = ["g0", "g1"].iter().map(|t| send(&weir, "up/m;hold", t)).collect();
    up.wait_until("two in flight", |s| s.iter().filter(|r| r.prompt().starts_with('g')).count() == 2).await;
    pending.extend(["g2", "g3", "g4"].iter().map(|t| send(&weir, "up/m;hold", t)));
    weir.wait_queue_depth("up", 3).await;

    weir.sigterm();
    weir.wait_for_log("shutting down").await;
    assert!(tokio::net::TcpStream::connect(weir.addr()).await.is_err(), "new connections must be refused");
    up.release();

    for (handle, tag) in pending.into_iter().zip(["g0", "g1", "g2", "g3", "g4"]) {
        let reply = handle.await.unwrap();
        assert_eq!(reply.status, 200, "{tag}: {}", reply.text);
        assert_eq!(reply.json()["choices"][0]["message"]["content"], tag);
    }
    let status = weir.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}:\n{}", weir.logs());
    assert_eq!(up.chats().len(), 5);
    assert!(weir.logs().contains("weir stopped"));
}

#[tokio::test]
async fn requests_left_at_shutdown_timeout_get_503_and_the_process_exits_0() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[server]\nshutdown_timeout = \"500ms\"\n{}",
        up.provider_toml("up", "", "workers = 1\nqueue = 4\nqueue_timeout = \"20s\"")
    );
    let mut weir = Weir::start(&config).await;

    let first = send(&weir, "up/m;hold", "t0");
    up.wait_until("t0 in flight", |s| s.iter().any(|r| r.prompt() == "t0")).await;
    let queued: Vec<_> = ["t1", "t2"].iter().map(|t| send(&weir, "up/m;hold", t)).collect();
    weir.wait_queue_depth("up", 2).await;

    weir.sigterm(); // the upstream never releases: nothing can finish in time
    let mut replies = vec![first.await.unwrap()];
    for h in queued {
        replies.push(h.await.unwrap());
    }
    for r in &replies {
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.error_code(), "shutting_down");
    }
    let status = weir.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}:\n{}", weir.logs());
    assert_eq!(up.chats().len(), 1, "queued requests must not start after the deadline");
}

#[tokio::test]
async fn stream_cut_by_shutdown_timeout_ends_with_an_error_event_not_done() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[server]\nshutdown_timeout = \"500ms\"\n{}",
        up.provider_toml("up", "", "workers = 1\nqueue = 4\nqueue_timeout = \"20s\"")
    );
    let mut weir = Weir::start(&config).await;
    let mut body = chat("up/m;chunks=3;hold_after=1", "s0");
    body["stream"] = true.into();
    let resp = crate::support::client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = crate::support::SseReader::new(resp);
    assert!(sse.next().await.is_some(), "the first chunk arrives before the upstream holds");

    weir.sigterm(); // the upstream never releases the rest
    let rest = sse.rest().await;
    let last = rest.last().cloned().unwrap_or_default();
    assert_ne!(last, "[DONE]", "a cut stream must not look complete: {rest:?}");
    let err: serde_json::Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {rest:?}"));
    assert_eq!(err["error"]["code"], "shutting_down", "{rest:?}");
    let status = weir.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}:\n{}", weir.logs());
}

/// Opens an HTTP/2 connection (prior knowledge, h2c) to `weir` with hyper's client, makes one
/// chat request on it, and returns its sender and connection driver (not yet polled again).
async fn h2_client_after_one_request(
    weir: &Weir,
) -> (hyper::client::conn::http2::SendRequest<Full<Bytes>>, impl Future<Output = hyper::Result<()>> + Send + 'static) {
    let tcp = tokio::net::TcpStream::connect(weir.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    let mut conn = Box::pin(conn);
    let req = http::Request::post(format!("http://{}/v1/chat/completions", weir.addr()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat("up/m", "hi").to_string())))
        .unwrap();
    // Drive the connection while the request runs.
    let answer = async {
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let answer = tokio::select! {
        a = answer => a,
        r = conn.as_mut() => panic!("the connection ended early: {r:?}"),
    };
    assert!(String::from_utf8_lossy(&answer).contains("hi"), "{answer:?}");
    (sender, conn)
}

#[tokio::test]
async fn sigterm_with_idle_h2_client_connections_exits_long_before_the_drain_timeout() {
    const DRAIN: Duration = Duration::from_secs(30);
    let up = MockUpstream::start().await;
    let config = format!("[server]\nshutdown_timeout = \"{}s\"\n{}", DRAIN.as_secs(), up.provider_toml("up", "", ""));
    let mut weir = Weir::start(&config).await;

    // A live client: its connection is idle, and it answers pings and GOAWAY.
    let (live_sender, live_conn) = h2_client_after_one_request(&weir).await;
    let live = tokio::spawn(live_conn);
    // A client that went quiet (a suspended process, a dropped network path): its connection
    // stays open but nothing on it is read or answered any more.
    let (quiet_sender, quiet_conn) = h2_client_after_one_request(&weir).await;
    // A client that connected (settings exchanged) and then went quiet before any request.
    let tcp = tokio::net::TcpStream::connect(weir.addr()).await.unwrap();
    let (unused_sender, unused_conn) =
        hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let mut unused_conn = Box::pin(unused_conn);
    let early = tokio::time::timeout(Duration::from_millis(200), unused_conn.as_mut()).await;
    assert!(early.is_err(), "the unused connection ended early: {early:?}");
    // A client that died right after its hello: preface and settings, and never an
    // acknowledgement of the server's settings or pings (hyper's graceful close waits for one).
    let mut hello_only = tokio::net::TcpStream::connect(weir.addr()).await.unwrap();
    let hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    tokio::io::AsyncWriteExt::write_all(&mut hello_only, hello).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    weir.sigterm();
    let status = weir.wait_exit(DRAIN + Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(status.success(), "{status}:\n{}", weir.logs());
    assert!(took < DRAIN / 4, "exit took {took:?} of a {DRAIN:?} drain timeout:\n{}", weir.logs());
    // The live client saw its connection end (not left half-open).
    let ended = tokio::time::timeout(Duration::from_secs(5), live).await;
    assert!(ended.is_ok(), "the live client's connection is still open");
    drop((live_sender, quiet_sender, quiet_conn, unused_sender, unused_conn, hello_only));
}
