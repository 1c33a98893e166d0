//! Hedged requests (opt-in per route, `hedge_after`): when a request's first attempt has not
//! answered (a stream: sent its first event) after the delay, the same request goes to the
//! route's next target too. The first answer wins; the other attempt is dropped at once, which
//! stops its upstream read and closes its connection.

use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::Pass;
use crate::error::Error;
use crate::pool::Reply;
use crate::providers::ProviderRequest;
use crate::{Served, Target, Ticket, attempt};

/// Where a hedge goes.
pub(crate) struct Backup<'a> {
    /// Its index in the snapshot's targets.
    pub index: usize,
    pub target: &'a Target,
    /// How long the first attempt runs alone.
    pub delay: Duration,
}

const SENT: usize = 0;
const WON: usize = 1;
const CANCELLED: usize = 2;

/// Runs `req` on `primary` (its breaker pass is `ticket`) and, once `backup.delay` has passed
/// without an answer, `copy` on the backup. Sets `served` to the winner.
///
/// # Errors
/// Both failed (or the primary failed before the delay): the primary's error, which the
/// caller's retries and fallbacks then handle.
pub(crate) async fn race(
    primary: &Target,
    req: ProviderRequest,
    ticket: Ticket<'_>,
    backup: Backup<'_>,
    copy: ProviderRequest,
    deadline: Option<Instant>,
    served: &mut Served,
) -> Result<Reply, Error> {
    let started = std::time::Instant::now();
    let (mut up_a, mut up_b) = (Duration::ZERO, Duration::ZERO);
    let a = attempt(primary, req, &mut up_a, deadline);
    tokio::pin!(a);
    let alone = tokio::select! {
        biased;
        r = &mut a => Some(r),
        () = tokio::time::sleep(backup.delay) => None,
    };
    let b_ticket = Ticket::new(backup.target.guard.breaker.as_ref(), &backup.target.pool);
    let alone = match alone {
        Some(r) => Some(r),
        // No hedge to a provider whose breaker refuses: the first attempt goes on alone.
        None if matches!(b_ticket.pass, Pass::Refused(_)) => Some(a.as_mut().await),
        None => None,
    };
    if let Some(r) = alone {
        served.upstream += started.elapsed();
        ticket.done(r.as_ref().err());
        return r;
    }
    served.attempts += 1;
    backup.target.guard.hedges[SENT].increment(1);
    let b = attempt(backup.target, copy, &mut up_b, deadline);
    tokio::pin!(b);
    let (mut a_live, mut b_live) = (true, true);
    let (mut ticket, mut b_ticket) = (Some(ticket), Some(b_ticket));
    let mut a_error = None;
    let result = loop {
        tokio::select! {
            r = &mut a, if a_live => {
                a_live = false;
                ticket.take().expect("one verdict").done(r.as_ref().err());
                match r {
                    Ok(reply) => break Ok(reply),
                    Err(e) if !b_live => break Err(e),
                    Err(e) => a_error = Some(e),
                }
            }
            r = &mut b, if b_live => {
                b_live = false;
                b_ticket.take().expect("one verdict").done(r.as_ref().err());
                match r {
                    Ok(reply) => {
                        backup.target.guard.hedges[WON].increment(1);
                        served.target = backup.index;
                        break Ok(reply);
                    }
                    Err(_) if !a_live => break Err(a_error.take().expect("the primary failed first")),
                    Err(_) => {}
                }
            }
        }
    };
    // The loser, still running, is dropped here: its call stops and its connection closes.
    if a_live {
        primary.guard.hedges[CANCELLED].increment(1);
    }
    if b_live {
        backup.target.guard.hedges[CANCELLED].increment(1);
    }
    served.upstream += started.elapsed();
    result
}
