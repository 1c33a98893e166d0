//! What a request is for, as the front door recognised it: the vocabulary that the front door,
//! the phases, plugins, metrics and providers share, so none of them imports another for it.
//!
//! Not `#[non_exhaustive]` on purpose: a new API format or operation must then be handled in
//! every `match` on it, and the compiler lists them.

/// The API format a client spoke: which JSON shapes its body, responses and stream events use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ApiFormat {
    /// OpenAI's chat completions and embeddings API.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// OpenAI's Responses API.
    #[serde(rename = "openai-responses")]
    Responses,
}

impl ApiFormat {
    /// The name plugins see (`request.api-format()`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Responses => "openai-responses",
        }
    }
}

/// What a client asked for, the same on every API format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A chat (completion) turn.
    Chat,
    /// Embeddings of the input texts.
    Embeddings,
}

impl Operation {
    /// The name plugins see (`request.operation()`), and the `endpoint` metrics label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
        }
    }
}

/// Where a request came in: an operation in an API format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The API format of the body, the responses and the stream events.
    pub format: ApiFormat,
    /// What was asked.
    pub op: Operation,
}

impl Endpoint {
    /// `POST /v1/chat/completions`.
    pub const OPENAI_CHAT: Self = Self { format: ApiFormat::OpenAi, op: Operation::Chat };
    /// `POST /v1/embeddings`.
    pub const OPENAI_EMBEDDINGS: Self = Self { format: ApiFormat::OpenAi, op: Operation::Embeddings };
    /// `POST /v1/messages`.
    pub const ANTHROPIC_MESSAGES: Self = Self { format: ApiFormat::Anthropic, op: Operation::Chat };
    /// `POST /v1/responses`.
    pub const OPENAI_RESPONSES: Self = Self { format: ApiFormat::Responses, op: Operation::Chat };
    /// Every endpoint, in [`Endpoint::index`] order.
    pub const ALL: [Self; 4] =
        [Self::OPENAI_CHAT, Self::OPENAI_EMBEDDINGS, Self::ANTHROPIC_MESSAGES, Self::OPENAI_RESPONSES];
    /// How many endpoints there are: the size of per-endpoint arrays (metrics handles).
    pub const COUNT: usize = Self::ALL.len();

    /// The position in [`Endpoint::ALL`], for per-endpoint arrays.
    pub const fn index(self) -> usize {
        match (self.format, self.op) {
            (ApiFormat::OpenAi, Operation::Chat) => 0,
            (ApiFormat::OpenAi, Operation::Embeddings) => 1,
            // Anthropic has no embeddings endpoint: no route makes this pair, and it shares
            // the chat slot rather than widening every per-endpoint array.
            (ApiFormat::Anthropic, _) => 2,
            (ApiFormat::Responses, _) => 3,
        }
    }

    /// The `endpoint` metrics label: the operation's name, whatever the format, except for
    /// Responses, a chat API of its own (`responses`).
    pub const fn label(self) -> &'static str {
        match self.format {
            ApiFormat::Responses => "responses",
            _ => self.op.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all() {
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
        }
    }

    #[test]
    fn names_are_what_plugins_and_metrics_see() {
        assert_eq!(Endpoint::OPENAI_CHAT.format.name(), "openai");
        assert_eq!(Endpoint::OPENAI_CHAT.label(), "chat");
        assert_eq!(Endpoint::OPENAI_EMBEDDINGS.op.name(), "embeddings");
        assert_eq!(Endpoint::ANTHROPIC_MESSAGES.format.name(), "anthropic");
        assert_eq!(Endpoint::ANTHROPIC_MESSAGES.label(), "chat");
    }
}
