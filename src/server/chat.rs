//! Chat messages to prompt tokens with the model's chat format. The
//! format's markers become their control tokens; message content is
//! tokenized as plain text, so a control-token marker typed by a user
//! stays text.

use crate::engine::{Engine, Tokenizer};

/// Chat formats recognised from `tokenizer.chat_template`; without a
/// template, ChatML when the vocabulary has `<|im_start|>` (llama.cpp's
/// fallback too), else a plain "User:/Assistant:" transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    ChatMl,
    Llama3,
    Llama2,
    Zephyr,
    Plain,
}

/// One message.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

/// OpenAI content: a string or a list of parts (only text parts here).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
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
    /// The text of the content; non-text parts are refused.
    pub fn text(&self) -> Result<String, String> {
        match self {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push_str(t),
                        (kind, _) => {
                            return Err(format!(
                                "content part of type {kind:?} is not supported (text only)"
                            ))
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

enum Seg<'a> {
    /// A marker: its control token when the vocabulary has one, else text.
    Mark(&'static str),
    /// Template text or message content (never parsed for markers).
    Text(&'a str),
}

impl ChatFormat {
    pub fn detect(engine: &Engine) -> ChatFormat {
        let template = engine
            .model()
            .reader
            .attributes()
            .and_then(|a| a.get("tokenizer.chat_template"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if template.contains("<|im_start|>") {
            ChatFormat::ChatMl
        } else if template.contains("<|start_header_id|>") {
            ChatFormat::Llama3
        } else if template.contains("[INST]") {
            ChatFormat::Llama2
        } else if template.contains("<|user|>") {
            ChatFormat::Zephyr
        } else if template.is_empty() && special_id(engine.tokenizer(), "<|im_start|>").is_some() {
            ChatFormat::ChatMl
        } else {
            ChatFormat::Plain
        }
    }

    /// Stop strings and stop-token markers of the format.
    pub fn stops(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            ChatFormat::ChatMl => (&["<|im_end|>"], &["<|im_end|>", "<|endoftext|>"]),
            ChatFormat::Llama3 => (&["<|eot_id|>"], &["<|eot_id|>", "<|end_of_text|>"]),
            ChatFormat::Llama2 => (&["[INST]"], &["</s>"]),
            ChatFormat::Zephyr => (&["<|user|>"], &["</s>"]),
            ChatFormat::Plain => (&["\nUser:"], &[]),
        }
    }

    /// The stop token ids this model has for the format.
    pub fn stop_ids(self, tok: &Tokenizer) -> Vec<u32> {
        self.stops()
            .1
            .iter()
            .filter_map(|m| special_id(tok, m))
            .collect()
    }

    fn segments<'a>(self, msgs: &'a [(String, String)], out: &mut Vec<Seg<'a>>) {
        for (role, content) in msgs {
            let role = role.as_str();
            match self {
                ChatFormat::ChatMl => {
                    out.extend([Seg::Mark("<|im_start|>"), Seg::Text(role), Seg::Text("\n")]);
                    out.extend([Seg::Text(content), Seg::Mark("<|im_end|>"), Seg::Text("\n")]);
                }
                ChatFormat::Llama3 => {
                    out.extend([
                        Seg::Mark("<|start_header_id|>"),
                        Seg::Text(role),
                        Seg::Mark("<|end_header_id|>"),
                        Seg::Text("\n\n"),
                        Seg::Text(content),
                        Seg::Mark("<|eot_id|>"),
                    ]);
                }
                ChatFormat::Llama2 => match role {
                    "system" => out.extend([
                        Seg::Text("<<SYS>>\n"),
                        Seg::Text(content),
                        Seg::Text("\n<</SYS>>\n\n"),
                    ]),
                    "assistant" => {
                        out.extend([Seg::Text(" "), Seg::Text(content), Seg::Mark("</s>")])
                    }
                    _ => out.extend([
                        Seg::Text("[INST] "),
                        Seg::Text(content),
                        Seg::Text(" [/INST]"),
                    ]),
                },
                ChatFormat::Zephyr => {
                    let mark = match role {
                        "system" => "<|system|>",
                        "assistant" => "<|assistant|>",
                        _ => "<|user|>",
                    };
                    out.extend([Seg::Mark(mark), Seg::Text("\n"), Seg::Text(content)]);
                    out.extend([Seg::Mark("</s>"), Seg::Text("\n")]);
                }
                ChatFormat::Plain => {
                    let label = match role {
                        "system" => "System: ",
                        "assistant" => "Assistant: ",
                        _ => "User: ",
                    };
                    out.extend([Seg::Text(label), Seg::Text(content), Seg::Text("\n")]);
                }
            }
        }
        match self {
            ChatFormat::ChatMl => out.extend([Seg::Mark("<|im_start|>"), Seg::Text("assistant\n")]),
            ChatFormat::Llama3 => out.extend([
                Seg::Mark("<|start_header_id|>"),
                Seg::Text("assistant"),
                Seg::Mark("<|end_header_id|>"),
                Seg::Text("\n\n"),
            ]),
            ChatFormat::Llama2 => {}
            ChatFormat::Zephyr => out.extend([Seg::Mark("<|assistant|>"), Seg::Text("\n")]),
            ChatFormat::Plain => out.push(Seg::Text("Assistant:")),
        }
    }

    /// The prompt tokens of `msgs` (role, content), with BOS first when
    /// `bos` and the model adds one.
    pub fn tokens(self, tok: &Tokenizer, msgs: &[(String, String)], bos: bool) -> Vec<u32> {
        let mut segs = Vec::new();
        self.segments(msgs, &mut segs);
        let mut ids = Vec::new();
        if bos && tok.add_bos {
            ids.extend(tok.bos);
        }
        let mut run = String::new();
        for seg in segs {
            match seg {
                Seg::Text(t) => run.push_str(t),
                Seg::Mark(m) => match special_id(tok, m) {
                    Some(id) => {
                        if !run.is_empty() {
                            ids.extend(tok.encode(&run, false, false));
                            run.clear();
                        }
                        ids.push(id);
                    }
                    None => run.push_str(m),
                },
            }
        }
        if !run.is_empty() {
            ids.extend(tok.encode(&run, false, false));
        }
        ids
    }
}

/// The id of `marker` when the vocabulary has it as one special token.
pub fn special_id(tok: &Tokenizer, marker: &str) -> Option<u32> {
    match tok.encode(marker, false, true).as_slice() {
        [id] if tok.tokens.get(*id as usize).is_some_and(|t| t == marker) => Some(*id),
        _ => None,
    }
}
