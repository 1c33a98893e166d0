//! A provider for unit tests: each request's last user message is a script
//! (`sleep:MS`, `panic`, `error:STATUS`, `stream:N`), and calls are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{ProviderRequest, ProviderResponse};
use crate::error::{Error, ErrorKind};

/// Scripted test provider.
#[derive(Default, Clone)]
pub struct Scripted {
    /// Calls that reached the provider.
    pub calls: Arc<AtomicUsize>,
    /// Calls that ran to completion (not cancelled).
    pub completed: Arc<AtomicUsize>,
}

impl Scripted {
    /// Runs the script in the last user message.
    ///
    /// # Errors
    /// `error:STATUS` answers with that upstream status.
    pub async fn call(&self, mut req: ProviderRequest) -> Result<ProviderResponse, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let script = super::mock::last_user_text(req.body.map());
        for step in script.split_whitespace() {
            let (op, arg) = step.split_once(':').unwrap_or((step, ""));
            match op {
                "sleep" => tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await,
                "panic" => panic!("scripted panic"),
                "error" => {
                    return Err(Error::new(ErrorKind::Upstream { status: arg.parse().unwrap_or(500) }, "scripted"));
                }
                "stream" => {
                    let n: usize = arg.parse().unwrap_or(1);
                    let done = self.completed.clone();
                    let s = futures_util::stream::iter(0..n).then(move |i| {
                        let done = done.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if i + 1 == n {
                                done.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(Bytes::from(format!("{{\"i\":{i}}}")))
                        }
                    });
                    return Ok(ProviderResponse::Stream(s.boxed()));
                }
                _ => {}
            }
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        Ok(ProviderResponse::Full { body: Bytes::from_static(b"{\"ok\":true}"), usage: None })
    }
}
