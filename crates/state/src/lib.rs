//! State shared between Weir instances: one Redis connection per process (multiplexed, so
//! every serving thread's requests can share it) and, for the hot path, one per serving thread
//! ([`Redis::eval_on`]), each round trip bounded by
//! `state.redis_timeout`, and whether Redis answers right now. Without `[state] redis_url`
//! there is no [`Redis`] and callers keep their state in process.
//!
//! Callers never wait longer than the bound: a slow or absent Redis is an [`Unavailable`],
//! and [`Redis::mode`] says whether the request then goes on with this instance's own state
//! (fail-open) or gets a 503 (fail-closed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline};
pub use weir_config::{OnUnavailable, StateConfig};

/// Redis did not answer within its bound (down, unreachable, slow, or an error reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the shared state store (Redis) did not answer in time")
    }
}

impl std::error::Error for Unavailable {}

/// Serving threads with a Redis connection of their own (more share the process's one).
pub const MAX_LANES: usize = 64;

/// `script` by its SHA-1, loading it first when Redis does not know it (a restart forgets
/// scripts).
async fn run_script<T: FromRedisValue>(
    conn: &mut ConnectionManager,
    script: &LuaScript,
    args: impl Fn(&mut Cmd),
) -> redis::RedisResult<T> {
    if let Some(sha) = script.sha.get() {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha.as_str());
        args(&mut cmd);
        match cmd.query_async::<T>(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {}
            done => return done,
        }
    }
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(script.text).query_async(conn).await?;
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha.as_str());
    args(&mut cmd);
    let _ = script.sha.set(sha);
    cmd.query_async::<T>(conn).await
}

/// A Lua script run by [`Redis::eval`]: its text, and its SHA-1 once Redis has loaded it.
pub struct LuaScript {
    text: &'static str,
    sha: std::sync::OnceLock<String>,
}

impl LuaScript {
    /// A script with this source.
    pub const fn new(text: &'static str) -> Self {
        Self { text, sha: std::sync::OnceLock::new() }
    }
}

/// The process's Redis connection and its availability.
pub struct Redis {
    conn: ConnectionManager,
    /// One connection per serving thread, made on that thread at its first use (so its I/O
    /// stays there): see [`Redis::eval_on`].
    lanes: Box<[OnceLock<ConnectionManager>]>,
    /// What a lane's connection is made from.
    client: redis::Client,
    config: ConnectionManagerConfig,
    timeout: Duration,
    mode: OnUnavailable,
    prefix: Arc<str>,
    /// Whether the last round trip succeeded; transitions are logged once and counted.
    up: AtomicBool,
    /// The URL without its password, for logs and `/ready`.
    shown: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("url", &self.shown).field("up", &self.available()).finish_non_exhaustive()
    }
}

impl Redis {
    /// The connection for `cfg`, or `None` without `redis_url`. It connects lazily and
    /// reconnects by itself; a Redis that is down at start is only [`Unavailable`] until it
    /// comes up. Must run inside a tokio runtime that outlives the connection (its driver task
    /// lives there).
    ///
    /// # Errors
    /// The URL does not parse (the message leaves the URL out: it may hold a password).
    pub fn connect(cfg: &StateConfig) -> Result<Option<Arc<Self>>, String> {
        let Some(url) = cfg.redis_url.as_deref() else { return Ok(None) };
        let client = redis::Client::open(url).map_err(|e| format!("state.redis_url: {:?}", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.redis_timeout))
            .set_response_timeout(Some(cfg.redis_timeout))
            // Reconnects happen in the background; a request never waits on a retry loop.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| format!("state.redis_url: {:?}", e.kind()))?;
        metrics::gauge!("weir_state_redis_up").set(0.0);
        Ok(Some(Arc::new(Self {
            conn,
            lanes: (0..MAX_LANES).map(|_| OnceLock::new()).collect(),
            client,
            config,
            timeout: cfg.redis_timeout,
            mode: cfg.on_unavailable,
            prefix: Arc::from(cfg.key_prefix.as_str()),
            up: AtomicBool::new(false),
            shown: cfg.redis_url_redacted().unwrap_or_default(),
        })))
    }

    /// What a request gets while Redis is unavailable.
    pub fn mode(&self) -> OnUnavailable {
        self.mode
    }

    /// Whether the last round trip succeeded.
    pub fn available(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The URL without its password.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The configured key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `name` under the configured key prefix.
    pub fn key(&self, name: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + name.len());
        k.push_str(&self.prefix);
        k.push_str(name);
        k
    }

    /// One command, bounded by `redis_timeout`.
    ///
    /// # Errors
    /// [`Unavailable`] on a timeout, a connection failure or an error reply.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone();
        let res = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        self.settle(res)
    }

    /// Several commands in one round trip, bounded by `redis_timeout`.
    ///
    /// # Errors
    /// As [`Redis::query`].
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone();
        let res = tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await;
        self.settle(res)
    }

    /// Runs a Lua `script` in one round trip (`EVALSHA`; after a Redis restart, which forgets
    /// scripts, it is loaded again first), bounded by `redis_timeout`. `args` appends the
    /// key count, keys and arguments.
    ///
    /// # Errors
    /// As [`Redis::query`].
    pub async fn eval<T: FromRedisValue>(&self, script: &LuaScript, args: impl Fn(&mut Cmd)) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone();
        let res = tokio::time::timeout(self.timeout, run_script(&mut conn, script, args)).await;
        self.settle(res)
    }

    /// [`Redis::eval`] on serving thread `lane`'s own connection (`None`, or past
    /// [`MAX_LANES`]: the shared one). Through the shared connection a serving thread's command
    /// would go through the thread that drives it and back, two cross-thread wake-ups per
    /// round trip; its own connection keeps the I/O on the request's thread. Call it only from
    /// that thread: the connection is made, and driven, on the runtime of its first caller.
    ///
    /// A lane's failure is the request's ([`Unavailable`]); availability, its log and gauge
    /// follow the shared connection, so N lanes noticing one outage log it once.
    ///
    /// # Errors
    /// As [`Redis::query`].
    pub async fn eval_on<T: FromRedisValue>(
        &self,
        lane: Option<usize>,
        script: &LuaScript,
        args: impl Fn(&mut Cmd),
    ) -> Result<T, Unavailable> {
        let Some(slot) = lane.and_then(|i| self.lanes.get(i)) else { return self.eval(script, args).await };
        let mut conn = slot
            .get_or_init(|| {
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
                    .unwrap_or_else(|_| self.conn.clone())
            })
            .clone();
        match tokio::time::timeout(self.timeout, run_script(&mut conn, script, args)).await {
            Ok(Ok(v)) => Ok(v),
            _ => Err(Unavailable),
        }
    }

    /// Notes whether Redis answered, logging and counting each change once.
    fn settle<T>(&self, res: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> Result<T, Unavailable> {
        let ok = matches!(res, Ok(Ok(_)));
        if self.up.swap(ok, Ordering::Relaxed) != ok {
            metrics::gauge!("weir_state_redis_up").set(if ok { 1.0 } else { 0.0 });
            if ok {
                tracing::info!(redis = %self.shown, "shared state: Redis answers again");
            } else {
                metrics::counter!("weir_state_unavailable_total").increment(1);
                let why = match &res {
                    Err(_) => "timed out".to_owned(),
                    Ok(Err(e)) => format!("{:?}", e.kind()),
                    Ok(Ok(_)) => String::new(),
                };
                tracing::warn!(redis = %self.shown, why, mode = ?self.mode, "shared state: Redis unavailable");
            }
        }
        match res {
            Ok(Ok(v)) => Ok(v),
            _ => Err(Unavailable),
        }
    }
}

/// `# HELP` lines of the series this crate writes.
pub fn describe_metrics() {
    metrics::describe_gauge!("weir_state_redis_up", "1 while the last Redis round trip succeeded, else 0");
    metrics::describe_counter!(
        "weir_state_unavailable_total",
        "Times Redis became unavailable (answered, then did not)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_redis_is_unavailable_within_the_bound() {
        // A port nothing listens on: connection refused, well inside the bound.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = StateConfig {
            redis_url: Some(format!("redis://127.0.0.1:{port}/0")),
            redis_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let redis = Redis::connect(&cfg).unwrap().unwrap();
        let started = std::time::Instant::now();
        let got: Result<String, _> = redis.query(&redis::cmd("PING")).await;
        assert_eq!(got, Err(Unavailable));
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(!redis.available());
    }

    #[test]
    fn no_url_means_no_redis() {
        assert!(Redis::connect(&StateConfig::default()).unwrap().is_none());
    }
}
