//! A closed-loop load client for streamed (SSE) chat completions, for `scripts/bench.sh`:
//! general load generators report only the time to the last byte, this one also reports the
//! time to the first body byte (TTFB). Each of `--concurrency` tasks keeps one HTTP/1.1
//! keep-alive connection and sends requests back to back for `--duration-s` seconds.
//!
//! Usage: `weir-stream-client --url http://127.0.0.1:PORT/v1/chat/completions --body FILE
//! [--concurrency 32] [--duration-s 5]`. Prints one line of JSON: requests, errors, rps, and
//! p50/p90/p99 of ttfb and total in milliseconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

#[derive(Default)]
struct Samples {
    ttfb: Vec<Duration>,
    total: Vec<Duration>,
    errors: u64,
}

async fn worker(addr: SocketAddr, host: String, path: String, body: Bytes, until: Instant) -> Samples {
    let mut s = Samples::default();
    'connect: while Instant::now() < until {
        let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
            s.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await else {
            s.errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let req = Request::post(path.as_str())
                .header(header::HOST, host.as_str())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .expect("request");
            let start = Instant::now();
            let Ok(resp) = send.send_request(req).await else {
                s.errors += 1;
                continue 'connect;
            };
            let ok = resp.status().is_success();
            let mut body = resp.into_body();
            let mut first: Option<Duration> = None;
            let mut failed = false;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) if f.is_data() && first.is_none() => first = Some(start.elapsed()),
                    Ok(_) => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if !ok || failed {
                s.errors += 1;
                if failed {
                    continue 'connect;
                }
                continue;
            }
            s.total.push(start.elapsed());
            s.ttfb.push(first.unwrap_or_else(|| start.elapsed()));
        }
    }
    s
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--url").expect("--url http://127.0.0.1:PORT/path");
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let addr: SocketAddr = host.parse().expect("URL host must be IP:PORT");
    assert!(addr.ip().is_loopback(), "the bench client targets loopback only");
    let body = Bytes::from(std::fs::read(arg(&args, "--body").expect("--body FILE")).expect("body file"));
    let concurrency: usize = arg(&args, "--concurrency").map_or(32, |v| v.parse().expect("--concurrency"));
    let secs: f64 = arg(&args, "--duration-s").map_or(5.0, |v| v.parse().expect("--duration-s"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let mut all = Samples::default();
    rt.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| tokio::spawn(worker(addr, host.to_string(), path.clone(), body.clone(), until)))
            .collect();
        for t in tasks {
            let s = t.await.expect("worker");
            all.ttfb.extend(s.ttfb);
            all.total.extend(s.total);
            all.errors += s.errors;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    all.ttfb.sort_unstable();
    all.total.sort_unstable();
    println!(
        "{{\"requests\":{},\"errors\":{},\"rps\":{:.1},\"ttfb_p50_ms\":{:.3},\"ttfb_p90_ms\":{:.3},\"ttfb_p99_ms\":{:.3},\"total_p50_ms\":{:.3},\"total_p90_ms\":{:.3},\"total_p99_ms\":{:.3}}}",
        all.total.len(),
        all.errors,
        all.total.len() as f64 / elapsed,
        pct(&all.ttfb, 0.5),
        pct(&all.ttfb, 0.9),
        pct(&all.ttfb, 0.99),
        pct(&all.total, 0.5),
        pct(&all.total, 0.9),
        pct(&all.total, 0.99),
    );
}
