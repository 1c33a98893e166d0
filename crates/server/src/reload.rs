//! Hot reload, off the request path: re-read the config, build a complete new [`Gateway`]
//! snapshot beside the running one (compile or load plugins from the cache, pre-instantiate,
//! `init`), and only if all of it succeeded swap it in. Requests in flight finish on the
//! snapshot they started with. Triggers: file watcher, SIGHUP, admin API.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, PluginConfig, embedded_default};
use crate::gateway::{AppState, Gateway};

/// What a successful reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// What triggered it (`watch`, `sighup`, `admin`).
    pub trigger: &'static str,
    /// Time to build and swap the new snapshot.
    pub duration_ms: u64,
    /// Provider names now serving.
    pub providers: Vec<String>,
    /// Plugin names in chain order.
    pub plugins: Vec<String>,
}

/// Changes made through the admin API, applied on top of the config file at every reload
/// (kept in memory: the file stays the source of truth across restarts).
#[derive(Default)]
struct Overlay {
    /// Plugins uploaded through the API that the config does not list (appended to the chain).
    added: Vec<PluginConfig>,
    /// Config plugins removed through the API.
    disabled: HashSet<String>,
}

/// Serialises reloads and holds where the config comes from.
pub struct Reloader {
    state: Arc<AppState>,
    /// The config file, or `None` for the embedded default.
    path: Option<PathBuf>,
    overlay: Mutex<Overlay>,
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader for the gateway in `state`, reading `path` (or the embedded default).
    pub fn new(state: Arc<AppState>, path: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self { state, path, overlay: Mutex::default(), running: tokio::sync::Mutex::new(()) })
    }

    /// The shared gateway state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// The config file being served, if any.
    pub fn config_path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the config source and applies the admin overlay.
    async fn read_config(&self) -> Result<Config, String> {
        let path = self.path.clone();
        let mut cfg = tokio::task::spawn_blocking(move || match path {
            Some(p) => Config::load(&p),
            None => embedded_default(),
        })
        .await
        .map_err(|e| format!("config loader failed: {e}"))?
        .map_err(|e| e.to_string())?;
        let overlay = self.overlay();
        cfg.plugins.retain(|p| !overlay.disabled.contains(&p.name));
        for added in &overlay.added {
            if !cfg.plugins.iter().any(|p| p.name == added.name) {
                cfg.plugins.push(added.clone());
            }
        }
        drop(overlay);
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    /// Builds a new snapshot and swaps it in; on any error the running snapshot stays.
    ///
    /// # Errors
    /// Why the new config or a plugin could not be loaded.
    pub async fn reload(&self, trigger: &'static str) -> Result<ReloadReport, String> {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let result = self.build_and_swap(trigger).await;
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("weir_reloads_total", "result" => label, "trigger" => trigger).increment(1);
        metrics::histogram!("weir_reload_duration_seconds").record(started.elapsed().as_secs_f64());
        match &result {
            Ok(r) => tracing::info!(
                trigger,
                duration_ms = r.duration_ms,
                providers = %r.providers.join(","),
                plugins = %r.plugins.join(" -> "),
                "reloaded"
            ),
            Err(e) => tracing::error!(trigger, error = %e, "reload refused; the previous configuration keeps serving"),
        }
        // Audit: every reload, accepted or refused, on the bus's high-priority queue.
        if let Some(bus) = &self.state.gateway.load().events {
            let detail = match &result {
                Ok(r) => serde_json::json!({ "trigger": trigger, "result": "ok", "report": r }),
                Err(e) => serde_json::json!({ "trigger": trigger, "result": "error", "error": e }),
            };
            bus.publish(crate::events::Event::fact(crate::config::Priority::High, "reload", detail));
        }
        result
    }

    async fn build_and_swap(&self, trigger: &'static str) -> Result<ReloadReport, String> {
        let started = Instant::now();
        let cfg = self.read_config().await?;
        let current = self.state.gateway.load_full();
        if cfg.server.listen != current.config.server.listen || cfg.admin.listen != current.config.admin.listen {
            tracing::warn!("listen addresses changed in the config; they take effect on restart only");
        }
        if cfg.server.threads != current.config.server.threads {
            tracing::warn!("server.threads changed in the config; it takes effect on restart only");
        }
        let next = Gateway::build(cfg, Some(&current)).await?;
        let report = ReloadReport {
            trigger,
            duration_ms: started.elapsed().as_millis() as u64,
            providers: next.config.providers.iter().map(|p| p.name.clone()).collect(),
            plugins: next.config.plugins.iter().map(|p| p.name.clone()).collect(),
        };
        self.state.gateway.store(next.clone());
        current.retire_replaced(&next);
        Ok(report)
    }

    /// Adds (or re-enables) an uploaded plugin that the config file does not list.
    pub fn overlay_add(&self, plugin: PluginConfig) {
        let mut o = self.overlay();
        o.disabled.remove(&plugin.name);
        o.added.retain(|p| p.name != plugin.name);
        o.added.push(plugin);
    }

    /// Removes a plugin from the chain (an uploaded one, or one the config lists).
    pub fn overlay_remove(&self, name: &str) {
        let mut o = self.overlay();
        o.added.retain(|p| p.name != name);
        o.disabled.insert(name.to_owned());
    }

    /// Undoes [`Self::overlay_remove`] / [`Self::overlay_add`] after a refused reload.
    pub fn overlay_restore(&self, name: &str, previous: Option<PluginConfig>, was_disabled: bool) {
        let mut o = self.overlay();
        o.added.retain(|p| p.name != name);
        if let Some(p) = previous {
            o.added.push(p);
        }
        if was_disabled {
            o.disabled.insert(name.to_owned());
        } else {
            o.disabled.remove(name);
        }
    }

    /// The overlay entry for `name`: (uploaded plugin config, whether it is disabled).
    pub fn overlay_entry(&self, name: &str) -> (Option<PluginConfig>, bool) {
        let o = self.overlay();
        (o.added.iter().find(|p| p.name == name).cloned(), o.disabled.contains(name))
    }

    /// Reloads on SIGHUP until the process exits.
    pub fn spawn_sighup(self: &Arc<Self>) {
        #[cfg(unix)]
        {
            let me = self.clone();
            tokio::spawn(async move {
                let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                    tracing::warn!("cannot install the SIGHUP handler; reload with the admin API or the watcher");
                    return;
                };
                while hup.recv().await.is_some() {
                    let _ = me.reload("sighup").await;
                }
            });
        }
    }

    /// Debounce for the file watcher, from the running config.
    pub fn debounce(&self) -> Duration {
        self.state.gateway.load().config.admin.watch_debounce
    }
}
