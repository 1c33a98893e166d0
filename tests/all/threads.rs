//! Serving threads: client connections spread over `server.threads` threads, each connection
//! stays on one, and requests on every thread reach the provider through the shared pool.

use crate::support::{MockUpstream, Reply, Weir, chat, client, metric};

#[tokio::test]
async fn connections_spread_over_the_serving_threads_and_keep_working() {
    let up = MockUpstream::start().await;
    let config = format!("[server]\nthreads = 3\n{}", up.provider_toml("up", "", "workers = 4"));
    let weir = Weir::start(&config).await;
    assert!(weir.logs().contains("(3 threads)"), "{}", weir.logs());

    // Six clients, each with its own keep-alive connection, three requests each, at once.
    let url = weir.url("/v1/chat/completions");
    let clients: Vec<reqwest::Client> = (0..6).map(|_| client()).collect();
    let runs = clients.iter().enumerate().map(|(i, c)| {
        let url = url.clone();
        async move {
            let mut statuses = Vec::new();
            for j in 0..3 {
                let resp = c.post(&url).json(&chat("up/m", &format!("client {i} request {j}"))).send().await.unwrap();
                let reply = Reply::read(resp).await;
                assert!(reply.text.contains(&format!("client {i} request {j}")), "{}", reply.text);
                statuses.push(reply.status);
            }
            statuses
        }
    });
    let statuses: Vec<u16> = futures_util::future::join_all(runs).await.into_iter().flatten().collect();
    assert_eq!(statuses, vec![200; 18]);
    assert_eq!(up.chats().len(), 18);

    // The six connections are still open (keep-alive), plus this one: 7 over 3 threads by
    // fewest-open-connections is 3/2/2, whatever order they came in.
    let text = Reply::read(client().get(weir.url("/metrics")).send().await.unwrap()).await.text;
    let mut open: Vec<f64> =
        ["0", "1", "2"].iter().map(|t| metric(&text, "weir_connections_open", &[("thread", t)])).collect();
    open.sort_by(f64::total_cmp);
    assert_eq!(open, vec![2.0, 2.0, 3.0], "{text}");
}

#[tokio::test]
async fn http2_streams_on_one_connection_are_served_concurrently() {
    let up = MockUpstream::start().await;
    let config = format!("[server]\nthreads = 2\n{}", up.provider_toml("up", "", "workers = 4"));
    let weir = Weir::start(&config).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(crate::support::http::REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let url = weir.url("/v1/chat/completions");
    // Six streams at once on the one connection (its stream tasks run on its serving thread).
    let calls = (0..6).map(|i| {
        let (h2, url) = (h2.clone(), url.clone());
        async move {
            let resp = h2.post(&url).json(&chat("up/m", &format!("stream {i}"))).send().await.unwrap();
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            let reply = Reply::read(resp).await;
            assert!(reply.text.contains(&format!("stream {i}")), "{}", reply.text);
            reply.status
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert_eq!(statuses, vec![200; 6]);
    let text = Reply::read(h2.get(weir.url("/metrics")).send().await.unwrap()).await.text;
    let open: f64 = ["0", "1"].iter().map(|t| metric(&text, "weir_connections_open", &[("thread", t)])).sum();
    assert_eq!(open, 1.0, "one h2 connection carried every request: {text}");
}
