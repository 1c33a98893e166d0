//! `/ready` follows provider health, and `x-weir-overhead-us` counts only Weir's own time,
//! also when the upstream call fails.

use crate::support::{MockUpstream, Weir, chat, post};

#[tokio::test]
async fn ready_is_503_while_the_only_provider_fails_and_200_after_it_recovers() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "")).await;
    assert_eq!(weir.ready().await.0, 200);

    // Three consecutive provider failures make it `failing`: not usable.
    for _ in 0..3 {
        let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;status=500", "x")).await;
        assert_eq!(reply.status, 502, "{}", reply.text);
    }
    let (status, ready) = weir.ready().await;
    assert_eq!(ready["providers"]["up"]["state"], "failing", "{ready}");
    assert_eq!((status, ready["status"].as_str()), (503, Some("not_ready")), "{ready}");

    // One success brings it back to `degraded`, which serves.
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m", "x")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (status, ready) = weir.ready().await;
    assert_eq!(ready["providers"]["up"]["state"], "degraded", "{ready}");
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");
}

#[tokio::test]
async fn an_upstream_timeout_is_not_counted_as_overhead() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&up.provider_toml("up", "", "request_timeout = \"500ms\"")).await;
    let reply = post(&weir.url("/v1/chat/completions"), &chat("up/m;latency=3000", "x")).await;
    assert_eq!((reply.status, reply.error_code().as_str()), (504, "upstream_timeout"), "{}", reply.text);
    let overhead: u64 = reply.header("x-weir-overhead-us").expect("x-weir-overhead-us").parse().unwrap();
    // The 500 ms spent waiting upstream is not Weir's; its own part is well under 100 ms.
    assert!(overhead < 100_000, "overhead {overhead}us includes the upstream wait");
}
