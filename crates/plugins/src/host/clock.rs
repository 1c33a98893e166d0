//! Capability `clock`: wall-clock milliseconds since the Unix epoch. Granted to every plugin.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasSelf, Linker};

use super::StoreData;
use crate::plugins::bindings::clock;

/// Per-instance state (none: the clock is the host's).
#[derive(Default)]
pub struct ClockState;

impl clock::Host for ClockState {
    fn now(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// Adds `weir:plugin/clock` to the linker.
///
/// # Errors
/// Only on a linker conflict (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    clock::add_to_linker::<StoreData, HasSelf<ClockState>>(linker, |d| &mut d.clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020() {
        assert!(clock::Host::now(&mut ClockState) > 1_577_836_800_000);
    }
}
