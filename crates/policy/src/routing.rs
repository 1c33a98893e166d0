//! The `select_provider` phase: which provider serves a model. Explicit `provider/model`, or a
//! bare model matched against configured model lists and aliases (first provider in config
//! order wins), then against the lists discovered from providers in the background.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ProviderConfig, RouteConfig};
use crate::error::{Error, ErrorKind};

// Looked up on every request: foldhash is a few times cheaper than SipHash on short names and
// still seeded per process (model names come from clients).
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Index of the provider (and its pool) in the gateway.
    pub provider: usize,
    /// Model name to send upstream.
    pub upstream_model: String,
}

/// Model routing table, immutable per config snapshot (discovered models swap atomically).
pub struct Router {
    providers: Map<usize>,
    /// Configured models and aliases → (provider, upstream model).
    configured: Map<(usize, String)>,
    /// Models discovered from providers → provider (refreshed in the background).
    discovered: ArcSwap<HashMap<String, usize>>,
}

impl Router {
    /// Builds the table from the providers in config order.
    pub fn new(providers: &[ProviderConfig]) -> Self {
        let mut configured = Map::default();
        let mut names = Map::default();
        for (i, p) in providers.iter().enumerate() {
            names.insert(p.name.clone(), i);
            for m in &p.models {
                configured.entry(m.clone()).or_insert_with(|| (i, m.clone()));
            }
            for (alias, target) in &p.aliases {
                configured.entry(alias.clone()).or_insert_with(|| (i, target.clone()));
            }
        }
        Self { providers: names, configured, discovered: ArcSwap::from_pointee(HashMap::new()) }
    }

    /// Adds `[[routes]]`: each route's model goes to its first target (the policy stage picks
    /// the target each request actually tries first). A route wins over providers' `models`.
    #[must_use]
    pub fn with_routes(mut self, routes: &[RouteConfig]) -> Self {
        for r in routes {
            if let Some(t) = r.targets.first()
                && let Some(&i) = self.providers.get(&t.provider)
            {
                self.configured.insert(r.model.clone(), (i, t.model.clone().unwrap_or_else(|| r.model.clone())));
            }
        }
        self
    }

    /// Resolves a model name.
    ///
    /// # Errors
    /// 404 `model_not_found` when no provider serves it.
    pub fn route(&self, model: &str) -> Result<Route, Error> {
        if let Some((provider, upstream)) = self.configured.get(model) {
            return Ok(Route { provider: *provider, upstream_model: upstream.clone() });
        }
        if let Some((prefix, rest)) = model.split_once('/')
            && let Some(&provider) = self.providers.get(prefix)
            && !rest.is_empty()
        {
            return Ok(Route { provider, upstream_model: rest.to_owned() });
        }
        if let Some(&provider) = self.discovered.load().get(model) {
            return Ok(Route { provider, upstream_model: model.to_owned() });
        }
        Err(Error::new(
            ErrorKind::ModelNotFound,
            format!("the model `{model}` does not exist or no provider serves it; see GET /v1/models"),
        )
        .with_param("model"))
    }

    /// Replaces the discovered models of one provider (keeps other providers' entries).
    pub fn set_discovered(&self, provider: usize, models: &[String]) {
        self.discovered.rcu(|current| {
            let mut next: HashMap<String, usize> =
                current.iter().filter(|(_, p)| **p != provider).map(|(m, p)| (m.clone(), *p)).collect();
            for m in models {
                next.entry(m.clone()).or_insert(provider);
            }
            Arc::new(next)
        });
    }

    /// Discovered models with their provider index.
    pub fn discovered(&self) -> Arc<HashMap<String, usize>> {
        self.discovered.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn router() -> Router {
        let cfg = Config::from_toml(
            r#"
            [[providers]]
            name = "a"
            kind = "mock"
            models = ["m1", "shared"]
            aliases = { fast = "m1" }
            [[providers]]
            name = "b"
            kind = "mock"
            models = ["m2", "shared"]
            "#,
        )
        .unwrap();
        Router::new(&cfg.providers)
    }

    #[test]
    fn bare_model_first_provider_wins() {
        let r = router();
        assert_eq!(r.route("shared").unwrap().provider, 0);
        assert_eq!(r.route("m2").unwrap().provider, 1);
    }

    #[test]
    fn explicit_provider_prefix() {
        let r = router();
        assert_eq!(r.route("b/shared").unwrap(), Route { provider: 1, upstream_model: "shared".into() });
        assert_eq!(r.route("b/anything").unwrap().upstream_model, "anything");
    }

    #[test]
    fn alias_maps_to_target() {
        assert_eq!(router().route("fast").unwrap(), Route { provider: 0, upstream_model: "m1".into() });
    }

    #[test]
    fn unknown_model_is_404() {
        let err = router().route("nope").unwrap_err();
        assert_eq!(err.status(), 404);
        assert_eq!(err.code_str(), "model_not_found");
    }

    #[test]
    fn discovered_models_route() {
        let r = router();
        r.set_discovered(1, &["gpt-x".to_string()]);
        assert_eq!(r.route("gpt-x").unwrap().provider, 1);
        r.set_discovered(1, &[]);
        assert!(r.route("gpt-x").is_err());
    }
}
