//! Settlements on their way to Redis: a finished request's estimate corrected and totals
//! added, a grant's unused parts handed back. One task gathers whatever has queued, sums it
//! per key and window, and sends it as one script call, so under load many requests share a
//! round trip and a key's counters take one increment each per batch.

use std::collections::HashMap;
use std::sync::Arc;

use weir_state::{LuaScript, Redis};

use crate::keys::KeyEntry;
use crate::lease::Leftover;
use crate::redis::Names;

/// Applies `op key field delta` quadruples: `u` adds to a hash field; `h` adds to a hash field,
/// `r` to an rpm bucket and its running total `t` (only a bucket still there), `c` to a
/// counter (then `EXPIRE field`), none taken below zero (a restarted Redis forgot what a
/// decrement would take back).
static SETTLE: LuaScript = LuaScript::new(
    r"
for i = 1, #ARGV, 4 do
  local op, k, f, d = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if op == 'u' then
    redis.call('HINCRBY', k, f, d)
  elseif op == 'h' or op == 'r' then
    local v = tonumber(redis.call('HGET', k, f) or '0')
    local n = math.max(d, -v)
    if n ~= 0 and (op == 'h' or v > 0) then
      redis.call('HINCRBY', k, f, n)
      if op == 'r' then redis.call('HINCRBY', k, 't', n) end
    end
  else
    local v = tonumber(redis.call('GET', k) or '0')
    local n = math.max(d, -v)
    if n ~= 0 then
      redis.call('INCRBY', k, n)
      redis.call('EXPIRE', k, f)
    end
  end
end
return 0
",
);

/// What one finished request, or one idle grant, changes.
pub(crate) struct Settlement {
    pub names: Arc<Names>,
    /// This instance's field in the key's concurrency hash.
    pub inst: Arc<str>,
    pub period_s: u64,
    /// A settled request: its windows, estimate corrections, and usage (prompt, completion,
    /// cost) for the totals.
    pub request: Option<Settled>,
    /// A grant's unused parts.
    pub back: Leftover,
    /// The key's grant, to hand back what is left if the key is still idle here when the
    /// settler looks (the lease's generation at its last settlement).
    pub idle: Option<(Arc<KeyEntry>, u64)>,
}

impl Settlement {
    /// Takes the grant's unused parts if its key has stayed idle since; whether it did.
    fn claim_idle(&mut self) -> bool {
        let Some((entry, generation)) = self.idle.take() else { return false };
        let back = entry.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner).idle_return(generation);
        let Some(b) = back else { return false };
        // A request's settlement carries no unused parts of its own: these are the only ones.
        self.back = b;
        true
    }
}

/// A settled request's part of a [`Settlement`].
pub(crate) struct Settled {
    pub minute: u64,
    pub period: u64,
    pub token_delta: i64,
    pub cost_delta: i64,
    pub prompt: u64,
    pub completion: u64,
    pub cost: u64,
}

/// One counter a batch changes: the key (its names' address), which counter, its window.
#[derive(Hash, PartialEq, Eq, Clone, Copy)]
enum Counter {
    Rpm(u64),
    Tpm(u64),
    Spend(u64),
    Slots,
    Usage(&'static str),
}

/// One counter's sum in a batch: the key's names, this instance's field, the budget period
/// (s, for the counter's expiry) and the change.
type Sum = (Arc<Names>, Arc<str>, u64, i64);

/// A batch's changes, summed per key and counter.
#[derive(Default)]
struct Batch {
    sums: HashMap<(usize, Counter), Sum>,
}

impl Batch {
    fn add(&mut self, s: &Settlement, c: Counter, delta: i64) {
        if delta == 0 {
            return;
        }
        let id = Arc::as_ptr(&s.names) as usize;
        let e = self.sums.entry((id, c)).or_insert_with(|| (s.names.clone(), s.inst.clone(), s.period_s, 0));
        e.3 += delta;
    }

    fn push(&mut self, s: &Settlement) {
        let b = &s.back;
        self.add(s, Counter::Rpm(b.sec), -(b.requests as i64));
        self.add(s, Counter::Tpm(b.minute), -(b.tokens as i64));
        self.add(s, Counter::Spend(b.period), -(b.nano as i64));
        self.add(s, Counter::Slots, -(b.slots as i64));
        if let Some(r) = &s.request {
            self.add(s, Counter::Tpm(r.minute), r.token_delta);
            self.add(s, Counter::Spend(r.period), r.cost_delta);
            self.add(s, Counter::Usage("requests"), 1);
            self.add(s, Counter::Usage("prompt_tokens"), r.prompt as i64);
            self.add(s, Counter::Usage("completion_tokens"), r.completion as i64);
            self.add(s, Counter::Usage("cost_nano"), r.cost as i64);
        }
    }

    /// The script's arguments.
    fn args(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.sums.len() * 4);
        for ((_, c), (n, inst, period_s, d)) in &self.sums {
            if *d == 0 {
                continue;
            }
            let (op, key, field) = match c {
                Counter::Rpm(sec) => ("r", n.rpm.clone(), sec.to_string()),
                Counter::Tpm(m) => ("c", format!("{}{m}", n.tpm), "180".to_owned()),
                Counter::Spend(p) => ("c", format!("{}{p}", n.spend), (period_s + 3600).to_string()),
                Counter::Slots => ("h", n.conc.clone(), inst.to_string()),
                Counter::Usage(f) => ("u", n.usage.clone(), (*f).to_owned()),
            };
            out.extend([op.to_owned(), key, field, d.to_string()]);
        }
        out
    }
}

/// Settlements waiting for the settler; past this many, a settlement is dropped (counted):
/// the slots' lease and the windows' expiry then take care of it.
const SETTLE_QUEUE: usize = 65_536;
/// How long requests' settlements wait for others to share their script call.
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);
/// Most settlements summed into one script call.
const SETTLE_BATCH: usize = 1024;

/// Where settlements go: one task sends whatever has gathered as one script call.
#[derive(Debug)]
pub(crate) struct Settler {
    tx: tokio::sync::mpsc::Sender<(Arc<Redis>, Settlement)>,
}

impl Settler {
    /// Starts the task on the current runtime; it ends when the settler is dropped.
    pub(crate) fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Arc<Redis>, Settlement)>(SETTLE_QUEUE);
        tokio::spawn(async move {
            let mut queued = Vec::with_capacity(SETTLE_BATCH);
            while rx.recv_many(&mut queued, SETTLE_BATCH).await > 0 {
                // Requests' settlements wait a little for company (one script per batch, not
                // per request); a grant's unused parts go at once (they are limits' room).
                let mut urgent = false;
                for (_, s) in &mut queued {
                    urgent |= s.claim_idle() || !s.back.is_empty();
                }
                if !urgent {
                    tokio::time::sleep(GATHER).await;
                    while queued.len() < SETTLE_BATCH
                        && let Ok(more) = rx.try_recv()
                    {
                        queued.push(more);
                    }
                    for (_, s) in &mut queued {
                        s.claim_idle();
                    }
                }
                // Usually one connection; a reload that changed `[state]` may leave two.
                while let Some((redis, _)) = queued.first() {
                    let redis = redis.clone();
                    let mut batch = Batch::default();
                    let mut sent = 0u64;
                    queued.retain(|(r, s)| {
                        let same = Arc::ptr_eq(r, &redis);
                        if same {
                            batch.push(s);
                            sent += 1;
                        }
                        !same
                    });
                    let args = batch.args();
                    if args.is_empty() {
                        continue;
                    }
                    let done: Result<i64, _> = redis
                        .eval(&SETTLE, |c| {
                            c.arg(0).arg(&args);
                        })
                        .await;
                    if done.is_err() {
                        metrics::counter!("weir_keys_settle_lost_total").increment(sent);
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queues `s`; never waits.
    pub(crate) fn send(&self, redis: Arc<Redis>, s: Settlement) {
        if self.tx.try_send((redis, s)).is_err() {
            metrics::counter!("weir_keys_settle_lost_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_sums_per_key_and_window() {
        let names = Arc::new(Names::for_test("P:", "abc"));
        let inst: Arc<str> = Arc::from("i1");
        let settled = |tokens| Settlement {
            names: names.clone(),
            inst: inst.clone(),
            period_s: 60,
            request: Some(Settled {
                minute: 7,
                period: 2,
                token_delta: tokens,
                cost_delta: 0,
                prompt: 10,
                completion: 5,
                cost: 100,
            }),
            back: Leftover::default(),
            idle: None,
        };
        let mut b = Batch::default();
        b.push(&settled(3));
        b.push(&settled(-1));
        b.push(&Settlement {
            names: names.clone(),
            inst: inst.clone(),
            period_s: 60,
            request: None,
            back: Leftover { sec: 420, requests: 4, slots: 2, ..Leftover::default() },
            idle: None,
        });
        let args = b.args();
        let quads: Vec<_> = args.chunks(4).map(|q| q.join(" ")).collect();
        let mut quads = quads;
        quads.sort();
        assert_eq!(
            quads,
            [
                "c P:tpm:abc:7 180 2",
                "h P:slots:abc i1 -2",
                "r P:rpms:abc 420 -4",
                "u P:usage:abc completion_tokens 10",
                "u P:usage:abc cost_nano 200",
                "u P:usage:abc prompt_tokens 20",
                "u P:usage:abc requests 2",
            ]
        );
    }
}
