//! Load time, off the request path: the one wasmtime engine (component model, fuel, epoch
//! interruption, pooling allocator), its epoch ticker, and compiling components through a
//! disk cache keyed by content hash + engine compatibility hash.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::{Contract, PACKAGE, VERSION, v0_1};
use super::host::{self, StoreData};
use crate::config::MAX_MEMORY_LIMIT;

/// The process-wide engine and the linker with every granted capability.
pub struct Runtime {
    /// The engine.
    pub engine: Engine,
    /// Host imports (shared by all plugins; instantiation is pre-resolved per plugin).
    pub linker: Linker<StoreData>,
    /// The engine's settings with the on-demand allocator, for the short-lived engines that
    /// compile (see [`precompile`]).
    compile_config: Config,
}

/// The process-wide runtime, made on first use; starts the epoch ticker thread.
///
/// # Errors
/// When the engine cannot be configured (e.g. virtual memory for the pool cannot be
/// reserved).
pub fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME.get_or_init(build).as_ref().map_err(Clone::clone)
}

/// Memory slots of the pool, set by the first config that loads plugins (see
/// [`size_pool`]); `weir plugin` and the unit tests, which load plugins without one, get
/// [`DEFAULT_MEMORY_SLOTS`].
static MEMORY_SLOTS: OnceLock<u32> = OnceLock::new();

/// Slots when no config sized the pool. Unit tests share one engine across tests that run
/// at once, so they keep the old, larger pool.
const DEFAULT_MEMORY_SLOTS: u32 = if cfg!(test) { 1000 } else { 64 };

/// Sizes the pool's linear-memory slots (each reserves ~4 GiB of address space) before the
/// engine is made; later calls change nothing, since the engine lives as long as the process.
pub fn size_pool(memory_slots: u32) {
    let _ = MEMORY_SLOTS.set(memory_slots.max(1));
}

fn build() -> Result<Runtime, String> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Async-component concurrency would double call cost; plugins do not need it.
        .concurrency_support(false)
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    // Only memory slots are sized: each reserves ~4 GiB (the 32-bit index space, so compiled
    // code needs no bounds checks); the other slots reserve a few GB for all 1,000 together.
    let memories = *MEMORY_SLOTS.get_or_init(|| DEFAULT_MEMORY_SLOTS);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(1000)
        .total_core_instances(2000)
        .total_memories(memories)
        .total_tables(2000)
        .total_stacks(1000)
        .max_memory_size(MAX_MEMORY_LIMIT);
    tracing::debug!(memory_slots = memories, "plugin instance pool sized");
    let compile_config = config.clone();
    if pooling_allocator(std::env::var("WEIR_PLUGIN_ALLOCATOR").ok().as_deref())? {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    let engine = Engine::new(&config).map_err(|e| format!("cannot start the wasm engine: {e}"))?;
    let mut linker = Linker::new(&engine);
    host::add_to_linker(&mut linker).map_err(|e| format!("cannot link host capabilities: {e}"))?;
    super::ticker::start(engine.weak()).map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
    Ok(Runtime { engine, linker, compile_config })
}

/// Whether instances come from the pooling allocator (the default) or are allocated on demand,
/// from `WEIR_PLUGIN_ALLOCATOR` (`pooling` | `on-demand`). The pool reserves its address space
/// up front (slots for 1,000 instances, each memory with its guard region): a process under an
/// address-space limit (`ulimit -v`) or under valgrind cannot reserve it, and `on-demand`
/// lets such a process run plugins, at a higher cost per instantiation (hook calls cost the
/// same). `scripts/instructions.sh` uses it to count the plugin chain's instructions.
fn pooling_allocator(value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("pooling") => Ok(true),
        Some("on-demand") => Ok(false),
        Some(other) => Err(format!("WEIR_PLUGIN_ALLOCATOR must be \"pooling\" or \"on-demand\", not {other:?}")),
    }
}

/// Compiles `bytes`, or loads the cached compilation from `cache_dir`; returns it with the
/// contract version it was built for.
///
/// # Errors
/// The component is invalid or not a Weir plugin of a supported version.
pub fn compile(rt: &Runtime, bytes: &[u8], cache_dir: Option<&Path>) -> Result<(Component, Contract), String> {
    let component = match cache_dir {
        Some(dir) => cached(rt, bytes, dir)?,
        None => fresh(rt, &precompile(rt, bytes)?)?,
    };
    let contract = check_contract(&rt.engine, &component)?;
    Ok((component, contract))
}

/// Compiles `bytes` to an artifact the serving engine loads.
///
/// The compiling is done by a short-lived engine with the same settings. Wasmtime keeps
/// cranelift's per-thread compiler contexts (their scratch buffers grow to tens of MB on a
/// large component) inside the engine for its whole life; compiling on the serving engine
/// would pin that memory for as long as the gateway runs. Dropping the scratch engine frees it,
/// and `malloc_trim` then returns most of it to the OS (about 10 MB of idle RSS after a cold
/// start; ARCHITECTURE.md, "Plugin runtime", has the measurements).
fn precompile(rt: &Runtime, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let started = std::time::Instant::now();
    let scratch = Engine::new(&rt.compile_config).ok().filter(|e| compat_hash(e) == compat_hash(&rt.engine));
    let compiled = scratch.as_ref().unwrap_or(&rt.engine).precompile_component(bytes);
    drop(scratch);
    release_freed_heap();
    tracing::debug!(compile_ms = started.elapsed().as_millis() as u64, "component compiled");
    compiled.map_err(|e| format!("invalid component: {e:#}"))
}

fn compat_hash(engine: &Engine) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    h.finish()
}

/// Returns free heap pages to the OS. Glibc keeps freed memory in the arena of the thread that
/// freed it (here the compile threads), so the pages cranelift used would otherwise stay
/// resident. Costs well under a millisecond next to a compile of 100 ms or more.
pub fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only hands free pages of glibc's arenas back to the kernel; it
    // touches no live allocation and is thread-safe.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The cache file for `bytes` on this engine.
pub fn cache_path(engine: &Engine, bytes: &[u8], dir: &Path) -> PathBuf {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}-{:016x}.cwasm", compat_hash(engine)))
}

fn cached(rt: &Runtime, bytes: &[u8], dir: &Path) -> Result<Component, String> {
    let path = cache_path(&rt.engine, bytes, dir);
    if !super::cache_trust::usable(dir, &path) {
        // Neither read nor written: someone else can change what is in it.
        return fresh(rt, &precompile(rt, bytes)?);
    }
    if path.exists() {
        // SAFETY: the file was written by `precompile_component` on an engine with the same
        // compatibility hash (it is in the name) into a cache directory owned by the gateway's
        // user and writable by no one else (checked just above by `cache_trust`); wasmtime
        // also checks its header. A file that fails to load is recompiled and overwritten.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(&rt.engine, &path) };
        match loaded {
            Ok(c) => {
                tracing::info!(path = %path.display(), "compiled component loaded from the cache");
                return Ok(c);
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component"),
        }
    }
    let started = std::time::Instant::now();
    let compiled = precompile(rt, bytes)?;
    tracing::info!(path = %path.display(), compile_ms = started.elapsed().as_millis() as u64, "component compiled");
    match write_atomically(dir, &path, &compiled) {
        // Map the file just written, as a warm start would: the code then sits in page cache
        // shared with the file rather than in a private heap copy.
        // SAFETY: as for a cache hit above; the file holds `compiled`, made just now.
        #[allow(unsafe_code)]
        Ok(()) => {
            if let Ok(c) = unsafe { Component::deserialize_file(&rt.engine, &path) } {
                return Ok(c);
            }
        }
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot write the component cache"),
    }
    fresh(rt, &compiled)
}

/// Loads a compilation made just now in memory.
fn fresh(rt: &Runtime, compiled: &[u8]) -> Result<Component, String> {
    // SAFETY: `compiled` was produced by `precompile_component` just now on an engine with the
    // same compatibility hash as this one (checked in `precompile`).
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(&rt.engine, compiled) };
    component.map_err(|e| format!("invalid component: {e:#}"))
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    create_private_dir(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// The compatibility key of a semver version: the major, or for `0.x` the minor.
fn compat_key(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '-', '+']);
    let major: u64 = parts.next()?.parse().ok()?;
    let minor: u64 = parts.next()?.parse().ok()?;
    Some(if major == 0 { (0, minor) } else { (major, 0) })
}

/// Which contract version a component exports `weir:plugin/handler` at: the current one or
/// the legacy 0.1, each compatible by semver (same major, same minor for 0.x).
///
/// # Errors
/// A message saying which version the component targets and which this gateway supports.
pub fn check_contract(engine: &Engine, component: &Component) -> Result<Contract, String> {
    let ty = component.component_type();
    let mut found = None;
    for (name, _) in ty.exports(engine) {
        if let Some(rest) = name.strip_prefix(PACKAGE).and_then(|r| r.strip_prefix("/handler")) {
            found = Some(rest.strip_prefix('@').unwrap_or("").to_owned());
        }
    }
    check_version(found.as_deref())
}

fn check_version(found: Option<&str>) -> Result<Contract, String> {
    let Some(version) = found else {
        return Err(format!("the component does not export {PACKAGE}/handler: is it a Weir plugin?"));
    };
    let key = compat_key(version);
    if key.is_some() && key == compat_key(VERSION) {
        return Ok(Contract::V0_2);
    }
    if key.is_some() && key == compat_key(v0_1::VERSION) {
        return Ok(Contract::V0_1);
    }
    Err(format!(
        "the component was built for {PACKAGE}@{version}, but this gateway supports {PACKAGE}@{VERSION} \
         (and still loads @{}; compatible: same major version, same minor for 0.x); rebuild it against \
         this gateway's wit/ (weir:plugin@{VERSION})",
        v0_1::VERSION
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocator_is_pooling_unless_on_demand_is_asked_for() {
        assert_eq!(pooling_allocator(None), Ok(true));
        assert_eq!(pooling_allocator(Some("pooling")), Ok(true));
        assert_eq!(pooling_allocator(Some("on-demand")), Ok(false));
        let err = pooling_allocator(Some("ondemand")).unwrap_err();
        assert!(err.contains("WEIR_PLUGIN_ALLOCATOR") && err.contains("ondemand"), "{err}");
    }

    #[test]
    fn scratch_compile_engine_matches_the_serving_engine() {
        // Otherwise `precompile` silently falls back to compiling on the serving engine and the
        // cranelift contexts stay resident.
        let rt = runtime().unwrap();
        let scratch = Engine::new(&rt.compile_config).unwrap();
        assert_eq!(compat_hash(&scratch), compat_hash(&rt.engine));
    }

    #[test]
    fn versions_0_1_and_0_2_are_accepted_by_zero_minor() {
        assert_eq!(check_version(Some("0.2.0")), Ok(Contract::V0_2));
        assert_eq!(check_version(Some("0.2.9")), Ok(Contract::V0_2));
        assert_eq!(check_version(Some("0.1.0")), Ok(Contract::V0_1));
        assert_eq!(check_version(Some("0.1.7")), Ok(Contract::V0_1));
        assert_eq!(compat_key("2.3.4"), Some((2, 0)));
    }

    #[test]
    fn other_versions_are_refused_naming_both_supported_ones() {
        for v in ["0.3.0", "0.0.1", "1.0.0", "1.2.0", "", "x"] {
            let err = check_version(Some(v)).unwrap_err();
            assert!(err.contains(&format!("weir:plugin@{v},")), "{err}");
            assert!(err.contains("supports weir:plugin@0.2.1") && err.contains("still loads @0.1.0"), "{err}");
        }
        assert!(check_version(None).unwrap_err().contains("is it a Weir plugin"));
    }

    #[test]
    fn invalid_bytes_are_refused_with_a_message() {
        let rt = runtime().unwrap();
        let err = compile(rt, b"not wasm", None).err().unwrap();
        assert!(err.starts_with("invalid component"), "{err}");
    }

    #[test]
    fn cache_path_depends_on_content() {
        let rt = runtime().unwrap();
        let a = cache_path(&rt.engine, b"a", Path::new("/c"));
        let b = cache_path(&rt.engine, b"b", Path::new("/c"));
        assert_ne!(a, b);
        assert_eq!(a, cache_path(&rt.engine, b"a", Path::new("/c")));
        assert!(a.to_string_lossy().ends_with(".cwasm"));
    }
}
