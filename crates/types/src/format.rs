//! What a request is for, as the front door recognised it: the vocabulary that the front door,
//! the phases, plugins, metrics and providers share, so none of them imports another for it.

/// Which OpenAI endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// Path below the provider's base URL, and metrics label.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat",
            Self::Embeddings => "embeddings",
        }
    }
}
