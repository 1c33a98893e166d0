//! What a plugin may import: one file per capability (`log`, `kv`, `metrics`, `clock`, the
//! `request`/`response` resources in `exchange`, and deny-by-default `wasi`). Each holds its
//! grant, its per-instance state, its generated `Host` impl and its `add_to_linker`; `legacy`
//! links the same capabilities under their `weir:plugin@0.1.0` names. The
//! store's data has one field per capability; anything not linked here is denied, and a
//! component that imports it fails to load.

pub mod clock;
pub mod exchange;
pub mod kv;
pub mod legacy;
pub mod log;
pub mod metrics;
pub mod wasi;

use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::Linker;
use wasmtime_wasi::{WasiCtxView, WasiView};

/// What every instance of one plugin shares.
#[derive(Clone)]
pub struct Shared {
    /// The plugin's kv namespace.
    pub kv: Arc<kv::KvStore>,
    /// The plugin's custom metrics.
    pub metrics: Arc<metrics::CustomMetrics>,
    /// The plugin's log budget (log calls and stdout/stderr).
    pub log: Arc<log::LogBudget>,
}

/// Data of one instance's store.
pub struct StoreData {
    /// `log` capability.
    pub log: log::LogState,
    /// `kv` capability.
    pub kv: kv::KvState,
    /// `metrics` capability.
    pub metrics: metrics::MetricsState,
    /// `clock` capability.
    pub clock: clock::ClockState,
    /// The request/response of the current call.
    pub exchange: exchange::Exchange,
    /// WASI (deny-by-default).
    pub wasi: wasi::WasiState,
    /// Memory cap.
    pub limits: Limits,
    /// When the current call must end (checked on every epoch tick).
    pub deadline: Instant,
}

impl StoreData {
    /// Fresh state for one instance.
    pub fn new(shared: &Shared, memory_limit: usize, max_output: usize) -> Self {
        Self {
            log: log::LogState::new(shared.log.clone()),
            kv: kv::KvState::new(shared.kv.clone()),
            metrics: metrics::MetricsState::new(shared.metrics.clone()),
            clock: clock::ClockState,
            exchange: exchange::Exchange::new(max_output),
            wasi: wasi::WasiState::new(&shared.log),
            limits: Limits::new(memory_limit),
            deadline: Instant::now(),
        }
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.view()
    }
}

/// The linear-memory cap of one instance; remembers that it refused a growth so a following
/// trap is reported as `memory` rather than a plain trap.
pub struct Limits {
    memory_limit: usize,
    /// A growth past the cap was refused.
    pub memory_hit: bool,
}

/// Most table elements; stops table-growth bombs.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl Limits {
    /// A cap of `memory_limit` bytes per linear memory.
    pub fn new(memory_limit: usize) -> Self {
        Self { memory_limit, memory_hit: false }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Links every granted capability.
///
/// # Errors
/// Only on a linker conflict (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wasi::add_to_linker(linker)?;
    exchange::add_to_linker(linker)?;
    log::add_to_linker(linker)?;
    kv::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    clock::add_to_linker(linker)?;
    legacy::add_to_linker(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_growth_past_the_cap_is_refused_and_remembered() {
        let mut l = Limits::new(1 << 20);
        assert!(l.memory_growing(0, 1 << 19, None).unwrap());
        assert!(!l.memory_hit);
        assert!(!l.memory_growing(1 << 19, 2 << 20, None).unwrap());
        assert!(l.memory_hit);
        assert!(!l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
    }
}
