//! The keys and their counters in Redis, shared by every instance. Admission is one Lua
//! script (one round trip): the key's record (revoked? a config key missing after a Redis
//! restart is written again), then every limit checked before anything is counted, then all
//! counted. Settlement is one pipeline the client does not wait for.
//!
//! Layout under `state.key_prefix` (`P`), `H` being the key's SHA-256 in hex:
//! `P key:H` (hash: `spec` JSON, `revoked`), `P keynames` (hash: name → H), `P keys:on` (set once a key is made through the admin API),
//! `P rpm:H` (sorted set: one member per request of the sliding minute),
//! `P conc:H` (sorted set: one member per request in flight, scored by its lease's end),
//! `P tpm:H:<minute>`, `P spend:H:<period>` (counters, nano-dollars), `P usage:H` (totals).

use redis::Cmd;
use weir_state::{LuaScript, Redis, Unavailable};

use crate::keys::{KeyEntry, KeyHash, KeySpec, Source};
use crate::{Ask, Limit, Refusal, Windows};

/// How long a request's concurrency slot lives in Redis if its instance never frees it
/// (killed): the slot is taken back then.
pub const LEASE_MS: u64 = 15 * 60 * 1000;

static ADMIT: LuaScript = LuaScript::new(
    r"
local st = redis.call('HMGET', KEYS[1], 'spec', 'revoked')
if st[2] == '1' then return {0, 'revoked'} end
if not st[1] then
  if ARGV[12] == '' then return {0, 'unknown'} end
  redis.call('HSET', KEYS[1], 'spec', ARGV[12])
  redis.call('HSET', KEYS[4], ARGV[13], ARGV[14])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxc = tonumber(ARGV[8])
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= maxc then return {1, 'concurrency', 1} end
end
local rpm = tonumber(ARGV[2])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[2]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {1, 'rpm', math.max(1, math.ceil((tonumber(oldest[2]) + 60000 - now) / 1000))}
  end
end
local minute = math.floor(now / 60000)
local tpm = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local tkey = ARGV[10] .. minute
if tpm > 0 then
  local used = tonumber(redis.call('GET', tkey) or '0')
  if used + tokens > tpm then
    return {1, 'tpm', math.max(1, math.ceil(((minute + 1) * 60000 - now) / 1000))}
  end
end
local period_ms = tonumber(ARGV[7]) * 1000
local period = math.floor(now / period_ms)
local budget = tonumber(ARGV[5])
local cost = tonumber(ARGV[6])
local skey = ARGV[11] .. period
if budget >= 0 then
  local spent = tonumber(redis.call('GET', skey) or '0')
  if spent >= budget or spent + cost > budget then
    return {1, 'budget', math.max(1, math.ceil(((period + 1) * period_ms - now) / 1000))}
  end
end
if maxc > 0 then redis.call('ZADD', KEYS[3], now + tonumber(ARGV[9]), ARGV[1]) end
if rpm > 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], 61000)
end
if tpm > 0 then
  redis.call('INCRBY', tkey, tokens)
  redis.call('EXPIRE', tkey, 180)
end
if budget >= 0 then
  redis.call('INCRBY', skey, cost)
  redis.call('EXPIRE', skey, tonumber(ARGV[7]) + 3600)
end
return {2, minute, period}
",
);

static CREATE: LuaScript = LuaScript::new(
    r"
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SET', KEYS[3], '1')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'spec', ARGV[3])
return 1
",
);

static REVOKE: LuaScript = LuaScript::new(
    r"
local hex = redis.call('HGET', KEYS[1], ARGV[1])
if not hex then return false end
redis.call('HSET', ARGV[2] .. hex, 'revoked', '1')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', ARGV[3] .. hex)
return hex
",
);

static SEED: LuaScript = LuaScript::new(
    r"
if redis.call('HGET', KEYS[1], 'revoked') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
",
);

/// What the admission script answered.
pub(crate) enum Admitted {
    /// Counted, in these windows.
    Yes(Windows),
    /// A limit refused it (nothing was counted).
    Refused(Refusal),
    /// The key was revoked, or is unknown to Redis.
    Gone,
}

fn record(redis: &Redis, hex: &str) -> String {
    redis.key(&format!("key:{hex}"))
}

/// One key's Redis names and its seed record, made once per key and prefix (not per request).
#[derive(Debug)]
pub(crate) struct Names {
    prefix: String,
    rec: String,
    rpm: String,
    conc: String,
    keynames: String,
    tpm: String,
    spend: String,
    usage: String,
    /// A config key's spec as JSON (written back if Redis lost it); empty for admin keys.
    seed: String,
}

impl Names {
    fn of(redis: &Redis, key: &KeyEntry) -> Self {
        let hex = &key.hex;
        Self {
            prefix: redis.key(""),
            rec: record(redis, hex),
            rpm: redis.key(&format!("rpm:{hex}")),
            conc: redis.key(&format!("conc:{hex}")),
            keynames: redis.key("keynames"),
            tpm: redis.key(&format!("tpm:{hex}:")),
            spend: redis.key(&format!("spend:{hex}:")),
            usage: redis.key(&format!("usage:{hex}")),
            seed: match key.spec.source {
                Source::Config => serde_json::to_string(&key.spec).unwrap_or_default(),
                Source::Admin => String::new(),
            },
        }
    }
}

/// `key`'s names under `redis`'s prefix (made again only if a reload changed the prefix).
pub(crate) fn names(redis: &Redis, key: &KeyEntry) -> std::sync::Arc<Names> {
    let mut slot = key.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*slot {
        Some(n) if redis.key("") == n.prefix => n.clone(),
        _ => {
            let n = std::sync::Arc::new(Names::of(redis, key));
            *slot = Some(n.clone());
            n
        }
    }
}

/// Checks and counts one request in one round trip.
pub(crate) async fn admit(
    redis: &Redis,
    lane: Option<usize>,
    key: &KeyEntry,
    ask: &Ask,
    member: &str,
) -> Result<Admitted, Unavailable> {
    let n = names(redis, key);
    let reply: redis::Value = redis
        .eval_on(lane, &ADMIT, |c: &mut Cmd| {
            c.arg(4).arg(&n.rec).arg(&n.rpm).arg(&n.conc).arg(&n.keynames);
            c.arg(member)
                .arg(ask.rpm.unwrap_or(0))
                .arg(ask.tpm.unwrap_or(0))
                .arg(ask.tokens)
                .arg(ask.budget_nano.map_or(-1, |b| b as i64))
                .arg(ask.cost_nano)
                .arg(ask.period_s.max(1))
                .arg(ask.max_concurrent.unwrap_or(0))
                .arg(LEASE_MS)
                .arg(&n.tpm)
                .arg(&n.spend)
                .arg(&n.seed)
                .arg(&key.spec.name)
                .arg(&key.hex);
        })
        .await?;
    let items = match reply {
        redis::Value::Array(items) => items,
        _ => return Err(Unavailable),
    };
    let int = |v: Option<&redis::Value>| match v {
        Some(redis::Value::Int(n)) => Some(*n),
        _ => None,
    };
    let text = |v: Option<&redis::Value>| match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    Ok(match int(items.first()) {
        Some(2) => Admitted::Yes(Windows {
            minute: int(items.get(1)).unwrap_or(0) as u64,
            period: int(items.get(2)).unwrap_or(0) as u64,
        }),
        Some(1) => {
            let limit = match text(items.get(1)).as_str() {
                "rpm" => Limit::Rpm,
                "tpm" => Limit::Tpm,
                "budget" => Limit::Budget,
                _ => Limit::Concurrency,
            };
            Admitted::Refused(Refusal { limit, retry_after: int(items.get(2)).unwrap_or(1).max(1) as u64 })
        }
        _ => Admitted::Gone,
    })
}

/// What a finished request changes: its slot freed, the estimate corrected, totals added.
pub(crate) struct Settlement {
    pub names: std::sync::Arc<Names>,
    pub windows: Windows,
    pub member: String,
    pub slot: bool,
    pub tpm: bool,
    pub budget: bool,
    pub period_s: u64,
    pub token_delta: i64,
    pub cost_delta: i64,
    pub prompt: u64,
    pub completion: u64,
    pub cost: u64,
}

/// Adds `s`'s commands to a pipeline.
fn settle_into(p: &mut redis::Pipeline, s: &Settlement) {
    let n = &s.names;
    if s.slot {
        p.cmd("ZREM").arg(&n.conc).arg(&s.member).ignore();
    }
    if s.tpm && s.token_delta != 0 {
        let k = format!("{}{}", n.tpm, s.windows.minute);
        p.cmd("INCRBY").arg(&k).arg(s.token_delta).ignore();
        p.cmd("EXPIRE").arg(&k).arg(180).ignore();
    }
    if s.budget && s.cost_delta != 0 {
        let k = format!("{}{}", n.spend, s.windows.period);
        p.cmd("INCRBY").arg(&k).arg(s.cost_delta).ignore();
        p.cmd("EXPIRE").arg(&k).arg(s.period_s + 3600).ignore();
    }
    p.cmd("HINCRBY").arg(&n.usage).arg("requests").arg(1).ignore();
    p.cmd("HINCRBY").arg(&n.usage).arg("prompt_tokens").arg(s.prompt).ignore();
    p.cmd("HINCRBY").arg(&n.usage).arg("completion_tokens").arg(s.completion).ignore();
    p.cmd("HINCRBY").arg(&n.usage).arg("cost_nano").arg(s.cost).ignore();
}

/// Settlements waiting for the settler; past this many, a settlement is dropped (counted):
/// its slot's lease and its windows' expiry then take care of it.
const SETTLE_QUEUE: usize = 65_536;
/// Most settlements sent in one pipeline.
const SETTLE_BATCH: usize = 512;

/// Where finished requests' settlements go: one task sends whatever has gathered as one
/// pipeline, so under load many requests share a round trip.
#[derive(Debug)]
pub(crate) struct Settler {
    tx: tokio::sync::mpsc::Sender<(std::sync::Arc<Redis>, Settlement)>,
}

impl Settler {
    /// Starts the task on the current runtime; it ends when the settler is dropped.
    pub(crate) fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(std::sync::Arc<Redis>, Settlement)>(SETTLE_QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(SETTLE_BATCH);
            while rx.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
                // Usually one connection; a reload that changed `[state]` may leave two.
                while let Some((redis, _)) = batch.first() {
                    let redis = redis.clone();
                    let mut p = redis::pipe();
                    let mut sent = 0u64;
                    batch.retain(|(r, s)| {
                        let same = std::sync::Arc::ptr_eq(r, &redis);
                        if same {
                            settle_into(&mut p, s);
                            sent += 1;
                        }
                        !same
                    });
                    if redis.pipeline::<()>(&p).await.is_err() {
                        metrics::counter!("weir_keys_settle_lost_total").increment(sent);
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues `s`; never waits.
    pub(crate) fn send(&self, redis: std::sync::Arc<Redis>, s: Settlement) {
        if self.tx.try_send((redis, s)).is_err() {
            metrics::counter!("weir_keys_settle_lost_total").increment(1);
        }
    }
}

/// The spec of the key with this hash, `None` if Redis does not know it or it was revoked.
pub(crate) async fn lookup(redis: &Redis, hash: &KeyHash) -> Result<Option<KeySpec>, Unavailable> {
    let (spec, revoked): (Option<String>, Option<String>) =
        redis.query(redis::cmd("HMGET").arg(record(redis, &hash.hex())).arg("spec").arg("revoked")).await?;
    Ok(spec.filter(|_| revoked.as_deref() != Some("1")).and_then(|s| serde_json::from_str(&s).ok()))
}

/// Stores a new admin key; `false` if its name is taken.
pub(crate) async fn create(redis: &Redis, hash: &KeyHash, spec: &KeySpec) -> Result<bool, Unavailable> {
    let hex = hash.hex();
    let json = serde_json::to_string(spec).unwrap_or_default();
    let (rec, names, on) = (record(redis, &hex), redis.key("keynames"), redis.key("keys:on"));
    let n: i64 = redis
        .eval(&CREATE, |c: &mut Cmd| {
            c.arg(3).arg(&rec).arg(&names).arg(&on).arg(&spec.name).arg(&hex).arg(&json);
        })
        .await?;
    Ok(n == 1)
}

/// Writes the config's keys (a key revoked through the admin API stays revoked).
pub(crate) async fn seed(redis: &Redis, keys: &[std::sync::Arc<KeyEntry>]) -> Result<(), Unavailable> {
    let names = redis.key("keynames");
    for k in keys {
        let json = serde_json::to_string(&k.spec).unwrap_or_default();
        let rec = record(redis, &k.hex);
        let _: i64 = redis
            .eval(&SEED, |c: &mut Cmd| {
                c.arg(2).arg(&rec).arg(&names).arg(&k.spec.name).arg(&k.hex).arg(&json);
            })
            .await?;
    }
    Ok(())
}

/// Revokes the key named `name`; its hash in hex if there was one.
pub(crate) async fn revoke(redis: &Redis, name: &str) -> Result<Option<String>, Unavailable> {
    let (names, rec_prefix, conc_prefix) = (redis.key("keynames"), redis.key("key:"), redis.key("conc:"));
    redis
        .eval(&REVOKE, |c: &mut Cmd| {
            c.arg(1).arg(&names).arg(name).arg(&rec_prefix).arg(&conc_prefix);
        })
        .await
}

/// Every live key: its hash in hex and spec.
pub(crate) async fn list(redis: &Redis) -> Result<Vec<(String, KeySpec)>, Unavailable> {
    let names: Vec<(String, String)> = redis.query(redis::cmd("HGETALL").arg(redis.key("keynames"))).await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut p = redis::pipe();
    for (_, hex) in &names {
        p.cmd("HMGET").arg(record(redis, hex)).arg("spec").arg("revoked");
    }
    let specs: Vec<(Option<String>, Option<String>)> = redis.pipeline(&p).await?;
    let mut out: Vec<(String, KeySpec)> = names
        .into_iter()
        .zip(specs)
        .filter(|(_, (_, revoked))| revoked.as_deref() != Some("1"))
        .filter_map(|((_, hex), (spec, _))| Some((hex, serde_json::from_str(&spec?).ok()?)))
        .collect();
    out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    Ok(out)
}

/// Whether a key was ever made through the admin API (on any instance: admission turns on
/// here too, and stays on when every key is revoked).
pub(crate) async fn any(redis: &Redis) -> Result<bool, Unavailable> {
    let n: u64 = redis.query(redis::cmd("EXISTS").arg(redis.key("keys:on"))).await?;
    Ok(n > 0)
}

/// A key's current windows and totals: requests in the last minute, tokens this minute, spend
/// this period, in flight, and the all-time totals.
pub(crate) async fn usage(redis: &Redis, key: &KeyEntry) -> Result<crate::Usage, Unavailable> {
    let hex = &key.hex;
    let now_ms = crate::now_ms();
    let period_s = key.spec.budget_period_s.unwrap_or(1).max(1);
    let mut p = redis::pipe();
    p.cmd("ZCOUNT").arg(redis.key(&format!("rpm:{hex}"))).arg(now_ms.saturating_sub(60_000) + 1).arg("+inf");
    p.cmd("GET").arg(redis.key(&format!("tpm:{hex}:{}", now_ms / 60_000)));
    p.cmd("GET").arg(redis.key(&format!("spend:{hex}:{}", now_ms / (period_s * 1000))));
    p.cmd("ZCOUNT").arg(redis.key(&format!("conc:{hex}"))).arg(now_ms).arg("+inf");
    p.cmd("HMGET")
        .arg(redis.key(&format!("usage:{hex}")))
        .arg("requests")
        .arg("prompt_tokens")
        .arg("completion_tokens")
        .arg("cost_nano");
    type Reply = (u64, Option<u64>, Option<u64>, u64, (Option<u64>, Option<u64>, Option<u64>, Option<u64>));
    let (rpm, tpm, spend, in_flight, (requests, prompt, completion, cost)): Reply = redis.pipeline(&p).await?;
    Ok(crate::Usage {
        requests_last_minute: rpm,
        tokens_this_minute: tpm.unwrap_or(0),
        spend_this_period_nano: spend.unwrap_or(0),
        in_flight,
        requests: requests.unwrap_or(0),
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        cost_nano: cost.unwrap_or(0),
    })
}
