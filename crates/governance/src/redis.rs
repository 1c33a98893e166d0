//! The keys and their counters in Redis, shared by every instance. Admission is one Lua
//! script (one round trip): the key's record (revoked? a config key missing after a Redis
//! restart is written again), the last grant's unused parts handed back, every limit checked
//! before anything is counted, then the request counted with a grant for this instance of up
//! to an eighth of what remains under each limit (`lease.rs` draws on it without Redis).
//! Settlements are aggregated per key and sent as one script per batch (`settle.rs`).
//!
//! Layout under `state.key_prefix` (`P`), `H` being the key's SHA-256 in hex:
//! `P key:H` (hash: `spec` JSON, `revoked`), `P keynames` (hash: name → H), `P keys:on` (set once a key is made through the admin API),
//! `P rpms:H` (hash: second → requests granted in it, the window being the last 61 buckets;
//! `t` their running total, `o` the oldest second it still counts),
//! `P slots:H` (hash: instance → slots it holds, `instance@` → its lease's end, ms),
//! `P tpm:H:<minute>`, `P spend:H:<period>` (counters, nano-dollars), `P usage:H` (totals).

use redis::Cmd;
use weir_state::{LuaScript, Redis, Unavailable};

use crate::keys::{KeyEntry, KeyHash, KeySpec, Source};
use crate::lease::{Granted, Leftover};
use crate::{Ask, Limit, Refusal, Windows};

/// How long an instance's concurrency slots live in Redis after its last grant if it never
/// frees them (killed): the slots are taken back then.
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
local sec = math.floor(now / 1000)
local minute = math.floor(now / 60000)
local period_ms = tonumber(ARGV[7]) * 1000
local period = math.floor(now / period_ms)
local tkey = ARGV[10] .. minute
local skey = ARGV[11] .. period
-- The last grant's unused parts first (never below zero: a restarted Redis forgot them).
local function back_h(key, field, n)
  if n > 0 then
    local v = tonumber(redis.call('HGET', key, field) or '0')
    if v > 0 then redis.call('HINCRBY', key, field, -math.min(v, n)) end
  end
end
local function back_c(key, n)
  if n > 0 then
    local v = tonumber(redis.call('GET', key) or '0')
    if v > 0 then redis.call('DECRBY', key, math.min(v, n)) end
  end
end
local n = tonumber(ARGV[17])
if n > 0 then
  local v = tonumber(redis.call('HGET', KEYS[2], ARGV[16]) or '0')
  if v > 0 then
    redis.call('HINCRBY', KEYS[2], ARGV[16], -math.min(v, n))
    redis.call('HINCRBY', KEYS[2], 't', -math.min(v, n))
  end
end
back_c(ARGV[10] .. ARGV[18], tonumber(ARGV[19]))
back_c(ARGV[11] .. ARGV[20], tonumber(ARGV[21]))
back_h(KEYS[3], ARGV[1], tonumber(ARGV[22]))
local more = tonumber(ARGV[15]) - 1
local xs, xr, xt, xb = 0, 0, 0, 0
local maxc = tonumber(ARGV[8])
if maxc > 0 then
  local all = redis.call('HGETALL', KEYS[3])
  local held, ends = {}, {}
  for i = 1, #all, 2 do
    local f = all[i]
    if string.sub(f, -1) == '@' then ends[string.sub(f, 1, -2)] = tonumber(all[i + 1])
    else held[f] = tonumber(all[i + 1]) end
  end
  local n = 0
  for f, c in pairs(held) do
    if f == ARGV[1] or (ends[f] or 0) > now then n = n + c
    else redis.call('HDEL', KEYS[3], f, f .. '@') end
  end
  if n >= maxc then return {1, 'concurrency', 1} end
  xs = math.min(more, math.floor((maxc - n - 1) / 8))
end
local rpm = tonumber(ARGV[2])
local rn, rold = 0, sec
if rpm > 0 then
  -- A running total ('t') of the buckets from second 'o' on: the seconds that left the window
  -- since the last call are taken off one by one (a long-idle key is summed afresh).
  local h = redis.call('HMGET', KEYS[2], 't', 'o')
  rn, rold = tonumber(h[1] or '0'), tonumber(h[2] or sec)
  local edge = math.floor((now - 61000) / 1000)
  if edge - rold > 61 then
    local all = redis.call('HGETALL', KEYS[2])
    rn = 0
    for i = 1, #all, 2 do
      local s = tonumber(all[i])
      if s and s <= edge then redis.call('HDEL', KEYS[2], all[i])
      elseif s then rn = rn + tonumber(all[i + 1]) end
    end
    rold = edge + 1
  else
    while rold <= edge do
      local c = redis.call('HGET', KEYS[2], rold)
      if c then
        rn = rn - tonumber(c)
        redis.call('HDEL', KEYS[2], rold)
      end
      rold = rold + 1
    end
  end
  if rn < 0 then rn = 0 end
  redis.call('HSET', KEYS[2], 't', rn, 'o', rold)
  if rn >= rpm then
    local first = rold
    while first < sec and tonumber(redis.call('HGET', KEYS[2], first) or '0') <= 0 do first = first + 1 end
    return {1, 'rpm', math.max(1, math.ceil(((first + 61) * 1000 - now) / 1000))}
  end
  xr = math.min(more, math.floor((rpm - rn - 1) / 8))
end
local tpm = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
if tpm > 0 then
  local used = tonumber(redis.call('GET', tkey) or '0')
  if used + tokens > tpm then
    return {1, 'tpm', math.max(1, math.ceil(((minute + 1) * 60000 - now) / 1000))}
  end
  xt = math.min(more * tokens, math.floor((tpm - used - tokens) / 8))
end
local budget = tonumber(ARGV[5])
local cost = tonumber(ARGV[6])
if budget >= 0 then
  local spent = tonumber(redis.call('GET', skey) or '0')
  if spent >= budget or spent + cost > budget then
    return {1, 'budget', math.max(1, math.ceil(((period + 1) * period_ms - now) / 1000))}
  end
  xb = math.min(more * math.max(cost, 1), math.floor((budget - spent - cost) / 8))
end
if maxc > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1 + xs)
  redis.call('HSET', KEYS[3], ARGV[1] .. '@', now + tonumber(ARGV[9]))
  redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[9]))
end
if rpm > 0 then
  redis.call('HINCRBY', KEYS[2], sec, 1 + xr)
  redis.call('HINCRBY', KEYS[2], 't', 1 + xr)
  redis.call('PEXPIRE', KEYS[2], 62000)
end
if tpm > 0 then
  redis.call('INCRBY', tkey, tokens + xt)
  redis.call('EXPIRE', tkey, 180)
end
if budget >= 0 then
  redis.call('INCRBY', skey, cost + xb)
  redis.call('EXPIRE', skey, tonumber(ARGV[7]) + 3600)
end
return {2, minute, period, sec, xr, xt, xb, xs}
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
    /// Counted, with this grant beyond the asking request.
    Yes(Granted),
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
    pub(crate) rpm: String,
    pub(crate) conc: String,
    keynames: String,
    pub(crate) tpm: String,
    pub(crate) spend: String,
    pub(crate) usage: String,
    /// A config key's spec as JSON (written back if Redis lost it); empty for admin keys.
    seed: String,
}

impl Names {
    fn of(redis: &Redis, key: &KeyEntry) -> Self {
        let seed = match key.spec.source {
            Source::Config => serde_json::to_string(&key.spec).unwrap_or_default(),
            Source::Admin => String::new(),
        };
        Self::under(&redis.key(""), &key.hex, seed)
    }

    fn under(prefix: &str, hex: &str, seed: String) -> Self {
        Self {
            prefix: prefix.to_owned(),
            rec: format!("{prefix}key:{hex}"),
            rpm: format!("{prefix}rpms:{hex}"),
            conc: format!("{prefix}slots:{hex}"),
            keynames: format!("{prefix}keynames"),
            tpm: format!("{prefix}tpm:{hex}:"),
            spend: format!("{prefix}spend:{hex}:"),
            usage: format!("{prefix}usage:{hex}"),
            seed,
        }
    }

    #[cfg(test)]
    pub(crate) fn for_test(prefix: &str, hex: &str) -> Self {
        Self::under(prefix, hex, String::new())
    }
}

/// `key`'s names under `redis`'s prefix (made again only if a reload changed the prefix).
pub(crate) fn names(redis: &Redis, key: &KeyEntry) -> std::sync::Arc<Names> {
    let mut slot = key.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*slot {
        Some(n) if redis.prefix() == n.prefix => n.clone(),
        _ => {
            let n = std::sync::Arc::new(Names::of(redis, key));
            *slot = Some(n.clone());
            n
        }
    }
}

/// Checks one request against every limit and, if all pass, counts it and a grant of up to
/// `want - 1` more for this instance (`inst`), in one round trip; `back` (the last grant's
/// unused parts) is handed back first.
pub(crate) async fn admit(
    redis: &Redis,
    lane: Option<usize>,
    key: &KeyEntry,
    ask: &Ask,
    inst: &str,
    want: u64,
    back: &Leftover,
) -> Result<Admitted, Unavailable> {
    let n = names(redis, key);
    let reply: redis::Value = redis
        .eval_on(lane, &ADMIT, |c: &mut Cmd| {
            c.arg(4).arg(&n.rec).arg(&n.rpm).arg(&n.conc).arg(&n.keynames);
            c.arg(inst)
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
                .arg(&key.hex)
                .arg(want.max(1))
                .arg(back.sec)
                .arg(back.requests)
                .arg(back.minute)
                .arg(back.tokens)
                .arg(back.period)
                .arg(back.nano)
                .arg(back.slots);
        })
        .await?;
    let items = match reply {
        redis::Value::Array(items) => items,
        _ => return Err(Unavailable),
    };
    let int = |i: usize| match items.get(i) {
        Some(redis::Value::Int(n)) => Some(*n),
        _ => None,
    };
    let uint = |i: usize| int(i).unwrap_or(0).max(0) as u64;
    let text = |v: Option<&redis::Value>| match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    Ok(match int(0) {
        Some(2) => Admitted::Yes(Granted {
            windows: Windows { minute: uint(1), period: uint(2) },
            sec: uint(3),
            requests: uint(4),
            tokens: uint(5),
            nano: uint(6),
            slots: uint(7),
        }),
        Some(1) => {
            let limit = match text(items.get(1)).as_str() {
                "rpm" => Limit::Rpm,
                "tpm" => Limit::Tpm,
                "budget" => Limit::Budget,
                _ => Limit::Concurrency,
            };
            Admitted::Refused(Refusal { limit, retry_after: int(2).unwrap_or(1).max(1) as u64 })
        }
        _ => Admitted::Gone,
    })
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
    let (names, rec_prefix, conc_prefix) = (redis.key("keynames"), redis.key("key:"), redis.key("slots:"));
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
/// this period, in flight, and the all-time totals. The windows count what was granted: an
/// instance's unused grant is counted until it goes back (once its requests are done, or with
/// its next grant).
pub(crate) async fn usage(redis: &Redis, key: &KeyEntry) -> Result<crate::Usage, Unavailable> {
    let hex = &key.hex;
    let now_ms = crate::now_ms();
    let period_s = key.spec.budget_period_s.unwrap_or(1).max(1);
    let mut p = redis::pipe();
    p.cmd("HGETALL").arg(redis.key(&format!("rpms:{hex}")));
    p.cmd("GET").arg(redis.key(&format!("tpm:{hex}:{}", now_ms / 60_000)));
    p.cmd("GET").arg(redis.key(&format!("spend:{hex}:{}", now_ms / (period_s * 1000))));
    p.cmd("HGETALL").arg(redis.key(&format!("slots:{hex}")));
    p.cmd("HMGET")
        .arg(redis.key(&format!("usage:{hex}")))
        .arg("requests")
        .arg("prompt_tokens")
        .arg("completion_tokens")
        .arg("cost_nano");
    type Reply = (
        Vec<(String, i64)>,
        Option<u64>,
        Option<u64>,
        Vec<(String, i64)>,
        (Option<u64>, Option<u64>, Option<u64>, Option<u64>),
    );
    let (rpm, tpm, spend, conc, (requests, prompt, completion, cost)): Reply = redis.pipeline(&p).await?;
    Ok(crate::Usage {
        requests_last_minute: rpm_in_window(&rpm, now_ms),
        tokens_this_minute: tpm.unwrap_or(0),
        spend_this_period_nano: spend.unwrap_or(0),
        in_flight: held_slots(&conc, now_ms),
        requests: requests.unwrap_or(0),
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        cost_nano: cost.unwrap_or(0),
    })
}

/// The requests of the rpm buckets (second → count) still in the window at `now_ms`, as the
/// script counts them: a second's bucket leaves the window 61 s after it began.
fn rpm_in_window(buckets: &[(String, i64)], now_ms: u64) -> u64 {
    let second = |f: &str| f.parse::<u64>().ok();
    let live = buckets.iter().filter(|(f, _)| second(f).is_some_and(|s| s * 1000 + 61_000 > now_ms));
    live.map(|(_, c)| (*c).max(0) as u64).sum()
}

/// The slots instances hold (`<instance>` → count) whose lease (`<instance>@` → end, ms) runs.
fn held_slots(fields: &[(String, i64)], now_ms: u64) -> u64 {
    let ends: std::collections::HashMap<&str, i64> =
        fields.iter().filter_map(|(f, v)| Some((f.strip_suffix('@')?, *v))).collect();
    let live =
        fields.iter().filter(|(f, _)| !f.ends_with('@') && ends.get(f.as_str()).is_some_and(|e| *e > now_ms as i64));
    live.map(|(_, c)| (*c).max(0) as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_live_buckets_and_leases() {
        let now = 100_500;
        let rpm = [("39", 5), ("40", 2), ("100", 3), ("99", -1), ("t", 10), ("o", 39)];
        let rpm: Vec<_> = rpm.iter().map(|(f, c)| ((*f).to_owned(), *c)).collect();
        assert_eq!(rpm_in_window(&rpm, now), 5, "second 39 left at 100 s; the total fields are no seconds");
        let conc = [("a".to_owned(), 3), ("a@".to_owned(), 200_000), ("b".to_owned(), 4), ("b@".to_owned(), 90_000)];
        assert_eq!(held_slots(&conc, now), 3, "b's lease ran out");
    }
}
