//! Hooks for `host/benches/plugins.rs` (not part of the API; only with the `bench` feature):
//! pool checkout/return, instance replacement, and a raw `on-request` call made synchronously
//! or asynchronously on the same instance, to measure what the async (fiber) call costs.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Resource, TypedFunc};
use wasmtime::{Store, UpdateDeadline};

use super::Chain;
use super::bindings::{PACKAGE, PluginWorld, RequestAction, RequestHandle, VERSION};
use super::host::StoreData;
use super::plugin::Plugin;
use crate::exchange::GatewayRequest;

fn first(chain: &Chain) -> &Arc<Plugin> {
    chain.plugins.first().expect("bench chain has a plugin")
}

/// Takes an instance from the first plugin's pool and puts it back.
pub async fn checkout_return(chain: &Chain) {
    let pool = first(chain).instances();
    let inst = pool.take(WAIT).await.expect("idle instance");
    pool.put(inst);
}

/// Makes one fresh instance (instantiate + `init`) of the first plugin and drops it: the cost
/// of replacing a discarded instance.
pub async fn make_instance(chain: &Chain) {
    first(chain).make_instance().await.expect("instance");
}

/// One instance with its raw `on-request` function, for sync-vs-async call timing.
pub struct RawCall {
    store: Store<StoreData>,
    func: TypedFunc<(Resource<RequestHandle>,), (RequestAction,)>,
}

impl RawCall {
    /// Instantiates the first plugin of `chain` (built for the current contract) on its own
    /// store and puts `req` in its exchange slot.
    pub async fn new(chain: &Chain, req: GatewayRequest) -> Self {
        let p = first(chain);
        // A linker with synchronous WASI: with the gateway's async WASI, wasmtime requires
        // `call_async`, so a sync call can only be measured on a sync-only linker.
        let component = p.pre().instance_pre().component().clone();
        let mut store = p.new_store();
        let mut linker = wasmtime::component::Linker::new(store.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        super::host::exchange::add_to_linker(&mut linker).unwrap();
        super::host::log::add_to_linker(&mut linker).unwrap();
        super::host::kv::add_to_linker(&mut linker).unwrap();
        super::host::metrics::add_to_linker(&mut linker).unwrap();
        super::host::clock::add_to_linker(&mut linker).unwrap();
        store.set_fuel(u64::MAX / 2).unwrap();
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Continue(1_000_000)));
        store.set_epoch_deadline(1_000_000);
        let instance = linker.instantiate_async(&mut store, &component).await.unwrap();
        let world = PluginWorld::new(&mut store, &instance).unwrap();
        world.weir_plugin_handler().call_init(&mut store, "{}").await.unwrap().unwrap();
        let iface = instance.get_export_index(&mut store, None, &format!("{PACKAGE}/handler@{VERSION}")).unwrap();
        let idx = instance.get_export_index(&mut store, Some(&iface), "on-request").unwrap();
        let func = instance.get_typed_func(&mut store, idx).unwrap();
        store.data_mut().exchange.put_request(req, None);
        Self { store, func }
    }

    /// A synchronous call (what a sync design would do on the tokio worker).
    pub fn call_sync(&mut self) {
        let (action,) = self.func.call(&mut self.store, (Resource::new_borrow(0),)).unwrap();
        assert!(matches!(action, RequestAction::Continue));
    }

    /// The same call through `call_async` (the design Weir uses: runs on a fiber, can yield).
    pub async fn call_async(&mut self) {
        let (action,) = self.func.call_async(&mut self.store, (Resource::new_borrow(0),)).await.unwrap();
        assert!(matches!(action, RequestAction::Continue));
    }
}

/// A generous timeout for bench checkouts.
pub const WAIT: Duration = Duration::from_secs(1);
