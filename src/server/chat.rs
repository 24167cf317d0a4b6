//! Chat messages as OpenAI sends them. The formats that turn them into
//! prompt tokens live in [`crate::engine::chat`] (shared with `zt chat`).

pub use crate::engine::chat::ChatFormat;

/// One message.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

/// OpenAI content: a string or a list of parts (only text parts here).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(
    untagged,
    expecting = "a string or a list of text parts ({\"type\": \"text\", \"text\": ...}); tool calls and other content are not supported"
)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    /// The text of the content; a non-text part, or a text part without
    /// text, is refused as (its path under the content, the reason).
    pub fn text(&self) -> Result<String, (String, String)> {
        match self {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => {
                let mut out = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push_str(t),
                        ("text", None) => {
                            return Err((
                                format!("[{j}].text"),
                                "a text part needs its text".to_string(),
                            ))
                        }
                        (kind, _) => {
                            return Err((
                                format!("[{j}].type"),
                                format!(
                                    "content part of type {kind:?} is not supported (text only)"
                                ),
                            ))
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}
