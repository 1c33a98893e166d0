//! A component's exports, whichever contract version it was built for: instantiation, `init`
//! and the three hooks dispatch on the version with one `match` per call (no boxing), and a
//! 0.1 component's answers come back as their 0.2 twins, so callers know one contract.

use wasmtime::component::{InstancePre, Resource};
use wasmtime::{Result, Store};

use super::bindings::{ChunkAction, Contract, Hooks, PluginWorld, PluginWorldPre, RequestAction, ResponseAction, v0_1};
use super::host::StoreData;

/// A component linked and ready to instantiate.
pub enum WorldPre {
    /// Built for `weir:plugin@0.1.x`.
    V0_1(v0_1::PluginWorldPre<StoreData>),
    /// Built for `weir:plugin@0.2.x`.
    V0_2(PluginWorldPre<StoreData>),
}

impl WorldPre {
    /// Checks that `pre` has the exports `contract` names.
    ///
    /// # Errors
    /// A missing or mistyped export.
    pub fn new(contract: Contract, pre: InstancePre<StoreData>) -> Result<Self> {
        Ok(match contract {
            Contract::V0_1 => Self::V0_1(v0_1::PluginWorldPre::new(pre)?),
            Contract::V0_2 => Self::V0_2(PluginWorldPre::new(pre)?),
        })
    }

    /// Instantiates the component in `store`.
    ///
    /// # Errors
    /// Instantiation trapped or ran out of fuel or time.
    pub async fn instantiate_async(&self, store: &mut Store<StoreData>) -> Result<World> {
        Ok(match self {
            Self::V0_1(pre) => World::V0_1(pre.instantiate_async(store).await?),
            Self::V0_2(pre) => World::V0_2(pre.instantiate_async(store).await?),
        })
    }

    /// The linked component (for the benches, which link it again synchronously).
    #[cfg(feature = "bench")]
    pub fn instance_pre(&self) -> &InstancePre<StoreData> {
        match self {
            Self::V0_1(pre) => pre.instance_pre(),
            Self::V0_2(pre) => pre.instance_pre(),
        }
    }
}

/// One instance's export handles.
pub enum World {
    /// Built for `weir:plugin@0.1.x`.
    V0_1(v0_1::PluginWorld),
    /// Built for `weir:plugin@0.2.x`.
    V0_2(PluginWorld),
}

impl World {
    /// Calls `init` with the plugin's config as JSON.
    ///
    /// # Errors
    /// The call trapped or hit a guard; `Ok(Err(_))` is the plugin refusing its config.
    pub async fn init(&self, store: &mut Store<StoreData>, config: &str) -> Result<Result<Hooks, String>> {
        Ok(match self {
            Self::V0_1(w) => w.weir_plugin_handler().call_init(store, config).await?.map(Hooks::from),
            Self::V0_2(w) => w.weir_plugin_handler().call_init(store, config).await?,
        })
    }

    /// Calls `on-request` on the request in the store's exchange slot.
    ///
    /// # Errors
    /// The call trapped or hit a guard.
    pub async fn on_request(&self, store: &mut Store<StoreData>) -> Result<RequestAction> {
        let req = Resource::new_borrow(0);
        Ok(match self {
            Self::V0_1(w) => w.weir_plugin_handler().call_on_request(store, req).await?.into(),
            Self::V0_2(w) => w.weir_plugin_handler().call_on_request(store, req).await?,
        })
    }

    /// Calls `on-response` on the request and response in the store's exchange slot.
    ///
    /// # Errors
    /// The call trapped or hit a guard.
    pub async fn on_response(&self, store: &mut Store<StoreData>) -> Result<ResponseAction> {
        let (req, resp) = (Resource::new_borrow(0), Resource::new_borrow(0));
        Ok(match self {
            Self::V0_1(w) => w.weir_plugin_handler().call_on_response(store, req, resp).await?.into(),
            Self::V0_2(w) => w.weir_plugin_handler().call_on_response(store, req, resp).await?,
        })
    }

    /// Calls `on-stream-chunk` with one chunk payload.
    ///
    /// # Errors
    /// The call trapped or hit a guard.
    pub async fn on_stream_chunk(&self, store: &mut Store<StoreData>, chunk: &[u8]) -> Result<ChunkAction> {
        let req = Resource::new_borrow(0);
        Ok(match self {
            Self::V0_1(w) => w.weir_plugin_handler().call_on_stream_chunk(store, req, chunk).await?.into(),
            Self::V0_2(w) => w.weir_plugin_handler().call_on_stream_chunk(store, req, chunk).await?,
        })
    }
}
