//! The gateway's own chat vocabulary, between API formats: a front door that speaks one format
//! and a provider that speaks another meet here (`api::openai::canonical` is the OpenAI side).
//! When client and provider speak the same format nothing is converted: the client's bytes go
//! upstream, so these types are off the hot path.
//!
//! The shapes follow what OpenAI Chat Completions, Anthropic Messages, Gemini `generateContent`
//! and Bedrock Converse have in common: a conversation of role-tagged messages made of content
//! parts (text, image, tool call, tool result, reasoning), tool definitions with a JSON Schema,
//! a reason the answer stopped, token counts, and a stream of deltas. What one format has and
//! the others lack is kept in `extra`, tagged with the format it came from ([`ApiFormat`]), so
//! that only that format writes it back.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields of the source format that no canonical field holds, as that format wrote them.
pub type Extra = Map<String, Value>;

/// The format whose fields an `extra` holds: a converter writes `extra` back only into its own
/// format, since another format's fields would be refused upstream (e.g. Anthropic's `top_k`
/// sent to OpenAI).
pub use crate::format::ApiFormat;

/// A conversion that cannot be made: the input lacks something the other side needs or has
/// something it cannot express. The path names the field, as in `messages[2].tool_call_id`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{path}`: {reason}")]
pub struct ConvertError {
    /// Where, in the input's own field names.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl ConvertError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { path: path.into(), reason: reason.into() }
    }
}

/// A chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The format `extra` fields (here and in every part of the request) came from.
    pub origin: ApiFormat,
    /// The model asked for.
    pub model: String,
    /// The conversation in order. Instructions are messages with [`Role::System`] or
    /// [`Role::Developer`]: the leading run of them ([`ChatRequest::system`]) is what Anthropic
    /// (`system`), Gemini (`systemInstruction`) and Bedrock (`system`) keep in a separate field.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// Whether and which tool the model must call; `None`: the format's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Most tokens to generate (required by Anthropic, so its converter supplies a default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sequences that end the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Answer as a stream of events.
    #[serde(default)]
    pub stream: bool,
    /// Request fields of `origin` not read into the fields above.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

impl ChatRequest {
    /// The leading instructions: the messages before the first that is neither
    /// [`Role::System`] nor [`Role::Developer`].
    pub fn system(&self) -> &[Message] {
        let n = self.messages.iter().take_while(|m| matches!(m.role, Role::System | Role::Developer)).count();
        &self.messages[..n]
    }
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions from the operator.
    System,
    /// Instructions from the application developer (OpenAI's newer name for `system`);
    /// formats without the distinction treat it as [`Role::System`].
    Developer,
    /// The end user, or the application on their behalf (Gemini: `user`).
    User,
    /// The model (Gemini: `model`).
    Assistant,
    /// A message that carries only tool results (OpenAI `tool`). Anthropic, Gemini and
    /// Bedrock put results in a user turn instead, so their converters read those as
    /// [`Role::User`] messages holding [`Part::ToolResult`]s.
    Tool,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// The content in order: text, images and tool results from the user side; text,
    /// reasoning and tool calls from the model.
    pub parts: Vec<Part>,
    /// Message fields of the origin format not read into the fields above (e.g. OpenAI `name`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// One piece of a message's content (Anthropic and Bedrock: a content block; Gemini: a part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Part fields of the origin format not read (e.g. a `cache_control` marker).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Extra,
    },
    /// An image given as input.
    Image {
        /// Where its bytes are.
        source: ImageSource,
        /// Part fields of the origin format not read (e.g. OpenAI's `detail`).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Extra,
    },
    /// The model's reasoning, where a format returns it (Anthropic `thinking`, Gemini
    /// `thought`, Bedrock `reasoningContent`). Anthropic needs it sent back, with its
    /// signature, in later turns of a tool-use conversation.
    Reasoning {
        /// The reasoning text.
        text: String,
        /// Opaque proof that the text is the model's own, where the format has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        /// Part fields of the origin format not read.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Extra,
    },
    /// The model asks to call a tool.
    ToolCall {
        /// Links the call to its result. Gemini's older calls have none; its converter makes
        /// one up from the name.
        id: String,
        /// The tool's name.
        name: String,
        /// The arguments as JSON text, as OpenAI sends them and as every format streams them
        /// (kept as text: a model may write JSON that does not parse).
        arguments: String,
        /// Fields of the origin format's tool call not read.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Extra,
    },
    /// The result of a tool call, given back to the model.
    ToolResult {
        /// The [`Part::ToolCall`] `id` it answers.
        id: String,
        /// The tool's name, when known (Gemini links results by name, not id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The result: text or images.
        content: Vec<Part>,
        /// The tool failed (Anthropic `is_error`, Bedrock `status = "error"`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        /// Fields of the origin format's result not read.
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Extra,
    },
    /// A part of a kind no variant above models (e.g. OpenAI `input_audio`), as the origin
    /// format wrote it. Only that format writes it back; another leaves it out.
    Unknown {
        /// The part, whole.
        part: Extra,
    },
}

/// Where an image's bytes are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    /// A URL the provider fetches (not every format takes one: Bedrock needs bytes).
    Url {
        /// The URL.
        url: String,
    },
    /// The bytes, base64-encoded (OpenAI: a `data:` URL; Anthropic, Gemini: base64 with a
    /// media type; Bedrock: bytes with a format).
    Base64 {
        /// e.g. `image/png`.
        media_type: String,
        /// The base64 text.
        data: String,
    },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments (OpenAI `parameters`, Anthropic `input_schema`, Gemini
    /// `parameters`, Bedrock `inputSchema.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Tool fields of the origin format not read (e.g. OpenAI `strict`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (all formats' default when tools are given).
    Auto,
    /// No tool call.
    None,
    /// At least one tool call, any tool (OpenAI `required`, Anthropic/Bedrock `any`, Gemini `ANY`).
    Required,
    /// A call of this tool.
    Tool {
        /// The tool's name.
        name: String,
    },
}

/// A whole (non-stream) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The format `extra` fields came from.
    pub origin: ApiFormat,
    /// The provider's id for the answer.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// Unix seconds when it was made, where the format says (OpenAI `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// The answer, a [`Role::Assistant`] message. One per request: Anthropic and Bedrock have
    /// no `n`, so OpenAI answers with several choices do not convert.
    pub message: Message,
    /// Why the answer stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<Finish>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Answer fields of the origin format not read.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// Why an answer stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum Finish {
    /// The model finished (OpenAI `stop`, Anthropic `end_turn`, Gemini `STOP`).
    Stop,
    /// One of the request's `stop` sequences was generated (Anthropic and Bedrock say which
    /// kind of stop; OpenAI reports it as `stop`).
    StopSequence(Option<String>),
    /// `max_tokens` was reached.
    Length,
    /// The model called tools and waits for their results.
    ToolCalls,
    /// A safety filter ended or withheld the answer (OpenAI `content_filter`, Anthropic
    /// `refusal`, Gemini `SAFETY` and the like, Bedrock `content_filtered`).
    ContentFilter,
    /// Another reason, as the origin format named it.
    Other(String),
}

/// Token counts of one answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// All input tokens, cached ones included (as OpenAI and Gemini count them; Anthropic's
    /// `input_tokens` leaves out cache reads and writes, so its converter adds them).
    pub input_tokens: u64,
    /// Generated tokens, reasoning included.
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache (Anthropic, Bedrock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// Output tokens spent on reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Usage fields of the origin format not read.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Extra,
}

/// One event of a streamed answer. Each format's stream maps onto a sequence of these: OpenAI's
/// `chat.completion.chunk` deltas, Anthropic's `message_start` / `content_block_*` /
/// `message_delta`, Gemini's partial answers, Bedrock's `contentBlockDelta` and friends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The answer begins; always the first event.
    Start {
        /// The format `extra` fields of the whole stream came from.
        origin: ApiFormat,
        /// The provider's id for the answer.
        id: String,
        /// The model that answers.
        model: String,
        /// Unix seconds, where the format says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created: Option<u64>,
        /// Answer fields of the origin format not read (e.g. OpenAI `system_fingerprint`).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        extra: Extra,
    },
    /// Text to append to the answer.
    Text {
        /// The new text.
        text: String,
    },
    /// Reasoning text to append.
    Reasoning {
        /// The new text.
        text: String,
    },
    /// A tool call begins. Its arguments follow in [`StreamEvent::ToolArguments`].
    ToolCall {
        /// The call's position among this answer's tool calls, from 0.
        index: u32,
        /// Links the call to its result.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More of a tool call's arguments (a fragment of JSON text).
    ToolArguments {
        /// The [`StreamEvent::ToolCall`] `index`.
        index: u32,
        /// The fragment.
        arguments: String,
    },
    /// The answer stopped.
    Finish {
        /// Why.
        reason: Finish,
    },
    /// Token counts so far (OpenAI sends them once, at the end; Anthropic at the start and
    /// the end).
    Usage {
        /// The counts.
        usage: Usage,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(role: Role, t: &str) -> Message {
        Message { role, parts: vec![Part::Text { text: t.into(), extra: Extra::new() }], extra: Extra::new() }
    }

    #[test]
    fn system_is_the_leading_run_of_instructions() {
        let req = ChatRequest {
            origin: ApiFormat::OpenAi,
            model: "m".into(),
            messages: vec![
                text(Role::System, "a"),
                text(Role::Developer, "b"),
                text(Role::User, "c"),
                text(Role::System, "late"),
            ],
            tools: vec![],
            tool_choice: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            stop: vec![],
            stream: false,
            extra: Extra::new(),
        };
        assert_eq!(req.system().len(), 2);
    }

    #[test]
    fn convert_errors_name_the_path() {
        let e = ConvertError::new("messages[2].tool_call_id", "missing");
        assert_eq!(e.to_string(), "`messages[2].tool_call_id`: missing");
    }
}
