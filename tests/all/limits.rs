//! Connection limits: slow heads and bodies are cut off by their timeouts, the connection cap
//! refuses cleanly with 503, the memory monitor sheds and recovers, hyper's own parse errors
//! carry the JSON error shape, and SIGTERM does not wait for idle or half-sent connections.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{MockUpstream, Weir, chat, client, metric, post};

/// Reads what the server sends until it closes the connection or `wait` passes.
/// Returns the bytes and whether the server closed.
async fn read_until_close(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One raw HTTP/1.1 response: status and body (the body is read by `Content-Length`).
async fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).to_string();
                return (status, head, body);
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("no whole response within 5 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "{v}");
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

#[tokio::test]
async fn slowloris_heads_are_closed_after_the_header_timeout_and_clean_requests_still_succeed() {
    let up = MockUpstream::start().await;
    let config = format!("[server]\nheader_read_timeout = \"500ms\"\n{}", up.provider_toml("up", "", ""));
    let weir = Weir::start(&config).await;
    // Half-sent heads (one byte more after a while), and sockets that send nothing at all.
    let mut held = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(weir.addr()).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ").await.unwrap();
        }
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for s in held.iter_mut().step_by(2) {
        s.write_all(b"a").await.unwrap();
    }
    let started = Instant::now();
    for (i, s) in held.iter_mut().enumerate() {
        let (_, closed) = read_until_close(s, Duration::from_secs(4)).await;
        assert!(closed, "socket {i} still open {:?} after the header timeout", started.elapsed());
    }
    eprintln!("20 slow or silent sockets closed {:?} after the first check", started.elapsed());
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m", "clean")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn a_keep_alive_connection_that_half_sends_its_next_head_is_closed_after_the_header_timeout() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[server]\nheader_read_timeout = \"500ms\"\nidle_timeout = \"60s\"\n{}",
        up.provider_toml("up", "", "")
    );
    let weir = Weir::start(&config).await;
    let mut s = TcpStream::connect(weir.addr()).await.unwrap();
    s.write_all(HEALTH).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    s.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ").await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(4)).await;
    let took = started.elapsed();
    eprintln!("half-sent second head closed after {took:?}");
    assert!(closed, "a half-sent head on a kept-alive connection stays open");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test]
async fn a_connection_with_no_request_in_flight_closes_after_the_idle_timeout() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[server]\nheader_read_timeout = \"10s\"\nidle_timeout = \"500ms\"\n{}",
        up.provider_toml("up", "", "")
    );
    let weir = Weir::start(&config).await;
    let mut s = TcpStream::connect(weir.addr()).await.unwrap();
    s.write_all(HEALTH).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    let started = Instant::now();
    let (_, closed) = read_until_close(&mut s, Duration::from_secs(4)).await;
    assert!(closed, "an idle keep-alive connection stays open");
    let took = started.elapsed();
    eprintln!("idle connection closed after {took:?}");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "closed after {took:?}");
}

#[tokio::test]
async fn a_chunked_body_that_never_ends_gets_408_after_the_body_timeout() {
    let up = MockUpstream::start().await;
    let config = format!("[server]\nbody_read_timeout = \"500ms\"\n{}", up.provider_toml("up", "", ""));
    let weir = Weir::start(&config).await;
    let mut s = TcpStream::connect(weir.addr()).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\n\r\n5\r\n{\"mod\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (status, head, body) = read_response(&mut s).await;
    assert_eq!(status, 408, "{head}\n{body}");
    assert_eq!(error_code(&body), "request_timeout");
    eprintln!("408 after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "408 after {:?}", started.elapsed());
    assert!(up.chats().is_empty());
}

/// Opens a connection that has been served once (so it is counted), or `None` if it was refused.
async fn served_connection(weir: &Weir) -> Option<TcpStream> {
    let mut s = TcpStream::connect(weir.addr()).await.unwrap();
    s.write_all(HEALTH).await.unwrap();
    let (status, _, _) = read_response(&mut s).await;
    (status == 200).then_some(s)
}

#[tokio::test]
async fn past_max_connections_new_connections_get_503_and_existing_ones_work() {
    let up = MockUpstream::start().await;
    let config = format!("[server]\nmax_connections = 3\n{}", up.provider_toml("up", "", ""));
    let weir = Weir::start(&config).await;
    // The start-up probe's connection may still be closing: retry until three are held.
    let mut held = Vec::new();
    for _ in 0..50 {
        match served_connection(&weir).await {
            Some(s) => held.push(s),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        if held.len() == 3 {
            break;
        }
    }
    assert_eq!(held.len(), 3);
    for _ in 0..3 {
        let mut s = TcpStream::connect(weir.addr()).await.unwrap();
        s.write_all(HEALTH).await.unwrap();
        let (status, head, body) = read_response(&mut s).await;
        assert_eq!(status, 503, "{head}\n{body}");
        assert!(head.to_ascii_lowercase().contains("retry-after: "), "{head}");
        assert_eq!(error_code(&body), "overloaded");
        let (_, closed) = read_until_close(&mut s, Duration::from_secs(3)).await;
        assert!(closed, "a refused connection is closed");
    }
    for s in &mut held {
        s.write_all(HEALTH).await.unwrap();
        assert_eq!(read_response(s).await.0, 200, "an existing connection keeps working");
    }
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        again = served_connection(&weir).await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a closed connection frees its place");
    held[0].write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    let (_, _, metrics) = read_response(&mut held[0]).await;
    let m = metric(&metrics, "weir_overload_shed_total", &[("reason", "connections")]);
    assert!(m >= 3.0, "shed connections counted: {m}");
}

#[tokio::test]
async fn past_the_critical_memory_threshold_requests_get_503_with_retry_after_and_recover() {
    let up = MockUpstream::start().await;
    let provider = up.provider_toml("up", "", "");
    let config = |critical: u64| {
        format!(
            "[server.overload]\nmemory_warning_bytes = 0\nmemory_critical_bytes = {critical}\n\
             sample_interval = \"50ms\"\nretry_after = \"3s\"\n{provider}"
        )
    };
    let weir = Weir::start(&config(1)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let shed = loop {
        let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m", "shed")).await;
        if reply.status == 503 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shed.status, 503, "{}", shed.text);
    assert_eq!(shed.error_code(), "overloaded");
    assert_eq!(shed.header("retry-after"), Some("3"));
    let (status, ready) = weir.ready().await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "overloaded", "{ready}");
    assert!(ready["overload"]["rss_bytes"].as_u64().unwrap() > 1, "{ready}");
    assert!(metric(&weir.metrics().await, "weir_overload_shed_total", &[("reason", "memory")]) >= 1.0);
    // Requests sent before the first sample went through; shed ones never reach the provider.
    let reached = up.chats().len();
    for _ in 0..3 {
        assert_eq!(post(&weir.url("/v1/chat/completions"), &chat("up/m", "shed")).await.status, 503);
    }
    assert_eq!(up.chats().len(), reached, "shed requests never reach the provider");

    // A threshold above the process's size (hot reload) ends the shedding.
    std::fs::write(weir.config_path(), config(64 * 1024 * 1024 * 1024)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m", "back")).await;
        if reply.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still shedding: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(weir.ready().await.0, 200);
}

#[tokio::test]
async fn errors_hyper_makes_itself_carry_the_json_error_shape() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    let huge = format!("GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: {}\r\n\r\n", "a".repeat(512 * 1024));
    for (request, want, code) in [
        (huge.as_bytes(), 431, "request_header_too_large"),
        (&b"GET /health HTTP/1.1\r\nbad header\r\n\r\n"[..], 400, "invalid_request"),
        (&b"G@T /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"[..], 400, "invalid_request"),
    ] {
        let mut s = TcpStream::connect(weir.addr()).await.unwrap();
        let _ = s.write_all(request).await;
        let (status, head, body) = read_response(&mut s).await;
        assert_eq!(status, want, "{head}\n{body}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        assert_eq!(error_code(&body), code, "{body}");
    }
    assert_eq!(client().get(weir.url("/health")).send().await.unwrap().status(), 200);
}

/// Splits `raw` into its first response (status, head, body) and the bytes after it.
fn split_response(raw: &[u8]) -> ((u16, String, String), &[u8]) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no head in {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).to_string();
    ((head[9..12].parse().unwrap(), head, body), &raw[end + 4 + len..])
}

#[tokio::test]
async fn a_bad_head_pipelined_in_the_same_write_as_a_good_request_gets_the_json_error_shape() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    for bad in [&b"GET /health HTTP/1.1\r\nbad header\r\n\r\n"[..], b"G@T /health HTTP/1.1\r\n\r\n"] {
        let mut s = TcpStream::connect(weir.addr()).await.unwrap();
        // Both requests in one write, so hyper answers both in one write too.
        s.write_all(&[HEALTH, HEALTH, bad].concat()).await.unwrap();
        let (raw, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "the connection stayed open after a bad head");
        let (first, rest) = split_response(&raw);
        let (second, rest) = split_response(rest);
        assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
        let ((status, head, body), rest) = split_response(rest);
        assert_eq!(status, 400, "{head}\n{body}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        assert_eq!(error_code(&body), "invalid_request", "{body}");
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(rest));
    }
}

#[tokio::test]
async fn sigterm_closes_half_sent_heads_and_idle_h2_connections_at_once() {
    let up = MockUpstream::start().await;
    let config = format!("[server]\nshutdown_timeout = \"20s\"\n{}", up.provider_toml("up", "", ""));
    let mut weir = Weir::start(&config).await;
    let mut half = TcpStream::connect(weir.addr()).await.unwrap();
    half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n").await.unwrap();
    // An HTTP/2 connection that said hello and then nothing (it never answers pings either).
    let mut h2 = TcpStream::connect(weir.addr()).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    // And a real HTTP/2 client that made a request and keeps its connection.
    let h2_client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    assert_eq!(h2_client.get(weir.url("/health")).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    weir.sigterm();
    let status = weir.wait_exit(Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(status.success(), "{status}:\n{}", weir.logs());
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    drop((half, h2, h2_client));
}

/// Sends `conns` chunked bodies of `sent` bytes that never end; returns the open sockets.
async fn hung_bodies(weir: &Weir, conns: usize, sent: usize) -> Vec<TcpStream> {
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, chunk) = (weir.addr(), chunk.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n";
            s.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..sent / (64 * 1024) {
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    break;
                }
            }
            s
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn memory_held_by_bodies_that_never_end_is_returned_after_the_body_timeout() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[server]\nbody_read_timeout = \"2s\"\n[server.overload]\nmemory_warning_bytes = 0\n\
         sample_interval = \"100ms\"\n{}",
        up.provider_toml("up", "", "")
    );
    let weir = Weir::start(&config).await;
    assert_eq!(post(&weir.url("/v1/chat/completions"), &chat("up/m", "warm")).await.status, 200);
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    // Two bursts: freeing the first raises glibc's mmap threshold, so the second one's
    // buffers come from the heap and stay resident unless the heap is trimmed.
    for burst in 0..2 {
        let baseline = weir.rss_bytes();
        let mut conns = hung_bodies(&weir, 30, 4 * 1024 * 1024).await;
        let peak = weir.rss_bytes();
        for s in &mut conns {
            let (status, _, body) = read_response(s).await;
            assert_eq!(status, 408, "{body}");
        }
        drop(conns);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut after = weir.rss_bytes();
        while after > baseline + (peak - baseline) / 6 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = weir.rss_bytes();
        }
        eprintln!(
            "burst {burst}: rss baseline {:.1} MB, peak {:.1} MB, after {:.1} MB",
            mb(baseline),
            mb(peak),
            mb(after)
        );
        assert!(peak > baseline + 64 * 1024 * 1024, "the burst was held: {:.1} -> {:.1} MB", mb(baseline), mb(peak));
        assert!(after <= baseline + (peak - baseline) / 6, "burst {burst}: memory not returned: {:.1} MB", mb(after));
    }
}
