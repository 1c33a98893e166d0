//! Does nothing in every hook: the baseline for the runtime's call-cost benchmark.

use weir_plugin_sdk::{Hooks, Plugin, export};

struct Noop;

impl Plugin for Noop {
    const HOOKS: Hooks = Hooks::all();

    fn init(_config: &str) -> Result<Self, String> {
        Ok(Noop)
    }
}

export!(Noop);
