//! Azure OpenAI's addressing, for the `openai` provider ([`crate::openai`]) of a
//! `kind = "azure"` table: each model is served by a deployment, at
//! `{base_url}/openai/deployments/{deployment}/{chat/completions|embeddings}?api-version=...`.
//! The body and the answers are OpenAI's format; only the URL and the key header differ.

use std::borrow::Cow;
use std::collections::HashMap;

use http::Uri;

use crate::config::preset::{AzureConfig, url_safe};
use crate::error::{Error, ErrorKind};
use crate::format::Operation;

/// The deployments of one Azure OpenAI resource.
pub struct Deployments {
    /// The resource endpoint, without a trailing `/`.
    base: Box<str>,
    api_version: Box<str>,
    /// The configured models' URLs, made once: chat, then embeddings.
    known: HashMap<String, [Uri; 2]>,
}

impl Deployments {
    /// The deployments of `cfg` on the resource at `base`.
    ///
    /// # Errors
    /// A message when a URL cannot be made from `base`, a deployment or the API version.
    pub fn new(base: &str, cfg: &AzureConfig) -> Result<Self, String> {
        let mut d = Self {
            base: base.trim_end_matches('/').into(),
            api_version: cfg.api_version.as_str().into(),
            known: HashMap::with_capacity(cfg.deployments.len()),
        };
        for (model, deployment) in &cfg.deployments {
            let urls = [d.make(deployment, Operation::Chat)?, d.make(deployment, Operation::Embeddings)?];
            d.known.insert(model.clone(), urls);
        }
        Ok(d)
    }

    /// The URL of `op` for `model`: its configured deployment's, else the deployment of the
    /// model's own name.
    ///
    /// # Errors
    /// [`ErrorKind::ModelNotFound`] for a model name that cannot name a deployment.
    pub fn url(&self, model: &str, op: Operation) -> Result<Cow<'_, Uri>, Error> {
        if let Some(urls) = self.known.get(model) {
            return Ok(Cow::Borrowed(&urls[op_index(op)]));
        }
        if !url_safe(model) {
            return Err(Error::new(
                ErrorKind::ModelNotFound,
                format!(
                    "the model `{model}` cannot name an Azure deployment (letters, digits, '-', '_', '.'); \
                     map it in the provider's deployments"
                ),
            )
            .with_param("model"));
        }
        self.make(model, op).map(Cow::Owned).map_err(|e| Error::new(ErrorKind::Internal, e))
    }

    /// The models with a configured deployment: what the provider lists.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = self.known.keys().cloned().collect();
        models.sort();
        models
    }

    fn make(&self, deployment: &str, op: Operation) -> Result<Uri, String> {
        let path = match op {
            Operation::Chat => "chat/completions",
            Operation::Embeddings => "embeddings",
        };
        format!("{}/openai/deployments/{deployment}/{path}?api-version={}", self.base, self.api_version)
            .parse()
            .map_err(|e| format!("base_url: {e}"))
    }
}

fn op_index(op: Operation) -> usize {
    match op {
        Operation::Chat => 0,
        Operation::Embeddings => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn deployments() -> Deployments {
        let cfg = AzureConfig {
            api_version: "2024-10-21".into(),
            deployments: BTreeMap::from([("gpt-4o".to_owned(), "prod-4o".to_owned())]),
        };
        Deployments::new("https://res.openai.azure.com/", &cfg).unwrap()
    }

    #[test]
    fn a_mapped_model_goes_to_its_deployment_and_another_to_its_own_name() {
        let d = deployments();
        assert_eq!(
            d.url("gpt-4o", Operation::Chat).unwrap().to_string(),
            "https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            d.url("text-embedding-3-small", Operation::Embeddings).unwrap().to_string(),
            "https://res.openai.azure.com/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
        );
        assert_eq!(d.models(), ["gpt-4o"]);
    }

    #[test]
    fn a_model_that_cannot_name_a_deployment_is_refused_by_name() {
        let e = deployments().url("a/b?x", Operation::Chat).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ModelNotFound);
        assert!(e.message.contains("a/b?x"), "{}", e.message);
    }
}
