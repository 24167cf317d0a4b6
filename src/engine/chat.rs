//! Chat formats: messages to prompt tokens, the one home of the chat
//! templates `zt chat` and `zt serve` use.
//!
//! A format is recognised from the model's `tokenizer.chat_template` (we
//! do not run Jinja: the known template families are matched by their
//! markers). A prompt is built as pieces of text marked as template markup
//! or as message content; only markup may hold control tokens
//! ([`Tokenizer::encode_pieces`]), so a control-token marker typed in a
//! message stays plain text.

use super::{Engine, Tokenizer};

/// Chat formats recognised from `tokenizer.chat_template`; without a
/// template, Gemma's for `gemma3` files (they carry none), ChatML when the
/// vocabulary has `<|im_start|>` (llama.cpp's fallback too), else a plain
/// "User:/Assistant:" transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    ChatMl,
    Llama3,
    Llama2,
    Zephyr,
    /// Gemma's `<start_of_turn>user|model` turns; no system role (a system
    /// message is put before the next user message's text, as Gemma's own
    /// template does).
    Gemma,
    Plain,
}

/// One piece of a prompt: `(text, is_template_markup)`.
pub type Piece = (String, bool);

impl ChatFormat {
    /// The format of `engine`'s model.
    pub fn detect(engine: &Engine) -> ChatFormat {
        let attrs = engine.model().reader.attributes();
        let key = |k: &str| attrs.and_then(|a| a.get(k)).and_then(|v| v.as_str());
        ChatFormat::from_metadata(
            key("tokenizer.chat_template").unwrap_or(""),
            key("general.architecture").unwrap_or(""),
            engine.tokenizer(),
        )
    }

    /// The format a chat template, an architecture and a vocabulary say.
    pub fn from_metadata(template: &str, arch: &str, tok: &Tokenizer) -> ChatFormat {
        if template.contains("<start_of_turn>") || (template.is_empty() && arch == "gemma3") {
            ChatFormat::Gemma
        } else if template.contains("<|im_start|>") {
            ChatFormat::ChatMl
        } else if template.contains("<|start_header_id|>") {
            ChatFormat::Llama3
        } else if template.contains("[INST]") {
            ChatFormat::Llama2
        } else if template.contains("<|user|>") {
            ChatFormat::Zephyr
        } else if template.is_empty() && special_id(tok, "<|im_start|>").is_some() {
            ChatFormat::ChatMl
        } else {
            ChatFormat::Plain
        }
    }

    /// The control token that ends a turn, if the format has one.
    pub fn end_marker(self) -> Option<&'static str> {
        match self {
            ChatFormat::ChatMl => Some("<|im_end|>"),
            ChatFormat::Llama3 => Some("<|eot_id|>"),
            ChatFormat::Llama2 | ChatFormat::Zephyr => Some("</s>"),
            ChatFormat::Gemma => Some("<end_of_turn>"),
            ChatFormat::Plain => None,
        }
    }

    /// What follows a turn's end marker before the next turn.
    fn separator(self) -> &'static str {
        match self {
            ChatFormat::ChatMl | ChatFormat::Zephyr | ChatFormat::Gemma | ChatFormat::Plain => "\n",
            ChatFormat::Llama3 | ChatFormat::Llama2 => "",
        }
    }

    /// Stop strings of the format (text that, when generated, ends the
    /// assistant's turn).
    pub fn stop_strings(self) -> &'static [&'static str] {
        match self {
            ChatFormat::ChatMl => &["<|im_end|>"],
            ChatFormat::Llama3 => &["<|eot_id|>"],
            ChatFormat::Llama2 => &["</s>", "[INST]"],
            ChatFormat::Zephyr => &["</s>", "<|user|>"],
            ChatFormat::Gemma => &["<end_of_turn>"],
            ChatFormat::Plain => &["\nUser:"],
        }
    }

    /// Control tokens that end the assistant's turn.
    fn stop_markers(self) -> &'static [&'static str] {
        match self {
            ChatFormat::ChatMl => &["<|im_end|>", "<|endoftext|>"],
            ChatFormat::Llama3 => &["<|eot_id|>", "<|end_of_text|>"],
            ChatFormat::Llama2 | ChatFormat::Zephyr => &["</s>"],
            ChatFormat::Gemma => &["<end_of_turn>", "<eos>"],
            ChatFormat::Plain => &[],
        }
    }

    /// The ids of the stop markers this vocabulary has.
    pub fn stop_ids(self, tok: &Tokenizer) -> Vec<u32> {
        self.stop_markers()
            .iter()
            .filter_map(|m| special_id(tok, m))
            .collect()
    }

    /// `msgs` (role, content) as prompt pieces, ending with the opening of
    /// the assistant's turn. Roles other than `system` and `assistant`
    /// are users.
    pub fn pieces(self, msgs: &[(String, String)]) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        let push = |out: &mut Vec<Piece>, s: &str, markup: bool| {
            if !s.is_empty() {
                out.push((s.to_string(), markup));
            }
        };
        // Gemma has no system turn: its text opens the next user turn.
        let mut pending_system: Vec<&str> = Vec::new();
        for (role, content) in msgs {
            let (role, content) = (role.as_str(), content.as_str());
            match self {
                ChatFormat::ChatMl => {
                    push(&mut out, &format!("<|im_start|>{role}\n"), true);
                    push(&mut out, content, false);
                    push(&mut out, "<|im_end|>\n", true);
                }
                ChatFormat::Llama3 => {
                    push(
                        &mut out,
                        &format!("<|start_header_id|>{role}<|end_header_id|>\n\n"),
                        true,
                    );
                    push(&mut out, content, false);
                    push(&mut out, "<|eot_id|>", true);
                }
                ChatFormat::Llama2 => match role {
                    "system" => {
                        push(&mut out, "<<SYS>>\n", true);
                        push(&mut out, content, false);
                        push(&mut out, "\n<</SYS>>\n\n", true);
                    }
                    "assistant" => {
                        push(&mut out, " ", true);
                        push(&mut out, content, false);
                        push(&mut out, "</s>", true);
                    }
                    _ => {
                        push(&mut out, "[INST] ", true);
                        push(&mut out, content, false);
                        push(&mut out, " [/INST]", true);
                    }
                },
                ChatFormat::Zephyr => {
                    let mark = match role {
                        "system" => "<|system|>\n",
                        "assistant" => "<|assistant|>\n",
                        _ => "<|user|>\n",
                    };
                    push(&mut out, mark, true);
                    push(&mut out, content, false);
                    push(&mut out, "</s>\n", true);
                }
                ChatFormat::Gemma => match role {
                    "system" => pending_system.push(content),
                    "assistant" => {
                        push(&mut out, "<start_of_turn>model\n", true);
                        push(&mut out, content, false);
                        push(&mut out, "<end_of_turn>\n", true);
                    }
                    _ => {
                        push(&mut out, "<start_of_turn>user\n", true);
                        for s in pending_system.drain(..) {
                            push(&mut out, s, false);
                            push(&mut out, "\n\n", false);
                        }
                        push(&mut out, content, false);
                        push(&mut out, "<end_of_turn>\n", true);
                    }
                },
                ChatFormat::Plain => {
                    let label = match role {
                        "system" => "System: ",
                        "assistant" => "Assistant: ",
                        _ => "User: ",
                    };
                    push(&mut out, label, true);
                    push(&mut out, content, false);
                    push(&mut out, "\n", true);
                }
            }
        }
        if self == ChatFormat::Gemma && !pending_system.is_empty() {
            // System text with no user message after it: a user turn of its own.
            push(&mut out, "<start_of_turn>user\n", true);
            for s in pending_system.drain(..) {
                push(&mut out, s, false);
            }
            push(&mut out, "<end_of_turn>\n", true);
        }
        let open = match self {
            ChatFormat::ChatMl => "<|im_start|>assistant\n",
            ChatFormat::Llama3 => "<|start_header_id|>assistant<|end_header_id|>\n\n",
            ChatFormat::Llama2 => "",
            ChatFormat::Zephyr => "<|assistant|>\n",
            ChatFormat::Gemma => "<start_of_turn>model\n",
            ChatFormat::Plain => "Assistant:",
        };
        push(&mut out, open, true);
        out
    }

    /// The prompt tokens of `msgs`, with BOS first when `bos` and the
    /// model adds one.
    pub fn tokens(self, tok: &Tokenizer, msgs: &[(String, String)], bos: bool) -> Vec<u32> {
        encode(tok, &self.pieces(msgs), bos)
    }

    /// The tokens of one more user turn of a running conversation whose
    /// context is `context` (see [`ChatFormat::continuation`]).
    pub fn next_turn(self, tok: &Tokenizer, context: &[u32], user: &str) -> Vec<u32> {
        self.continuation(tok, context, &[("user".to_string(), user.to_string())])
    }

    /// The tokens of more messages of a running conversation whose context
    /// is `context` (empty: a new conversation, BOS first when the model
    /// adds one), so that the context then reads as the format renders the
    /// whole conversation: the end of the previous turn when the context
    /// does not already end with it (a turn that ended at EOS, at a stop
    /// string or at the length limit left it out) and the separator after
    /// it, then the messages and the opening of the assistant's turn.
    pub fn continuation(
        self,
        tok: &Tokenizer,
        context: &[u32],
        msgs: &[(String, String)],
    ) -> Vec<u32> {
        let mut pieces: Vec<Piece> = Vec::new();
        if !context.is_empty() {
            let mut close = String::new();
            if let Some(marker) = self.end_marker() {
                if !context.ends_with(&tok.encode(marker, false, true)) {
                    close.push_str(marker);
                }
            }
            close.push_str(self.separator());
            pieces.push((close, true));
        }
        pieces.extend(self.pieces(msgs));
        encode(tok, &pieces, context.is_empty())
    }
}

fn encode(tok: &Tokenizer, pieces: &[Piece], bos: bool) -> Vec<u32> {
    let refs: Vec<(&str, bool)> = pieces.iter().map(|(t, m)| (t.as_str(), *m)).collect();
    tok.encode_pieces(&refs, bos)
}

/// The id of `marker` when the vocabulary has it as one special token.
pub fn special_id(tok: &Tokenizer, marker: &str) -> Option<u32> {
    match tok.encode(marker, false, true).as_slice() {
        [id] if tok.tokens.get(*id as usize).is_some_and(|t| t == marker) => Some(*id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ChatFormat; 6] = [
        ChatFormat::ChatMl,
        ChatFormat::Llama3,
        ChatFormat::Llama2,
        ChatFormat::Zephyr,
        ChatFormat::Gemma,
        ChatFormat::Plain,
    ];

    fn msgs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn message_content_is_never_markup() {
        let typed = "<|im_end|><|eot_id|></s><end_of_turn>";
        for f in ALL {
            let p = f.pieces(&msgs(&[("system", typed), ("user", typed)]));
            for (text, markup) in &p {
                if text.contains(typed) {
                    assert!(!markup, "{f:?}");
                }
            }
            assert!(p.iter().any(|(t, m)| t == typed && !m), "{f:?}");
        }
    }

    #[test]
    fn texts_of_the_formats() {
        let join = |f: ChatFormat, m: &[(&str, &str)]| -> String {
            f.pieces(&msgs(m)).into_iter().map(|p| p.0).collect()
        };
        assert_eq!(
            join(ChatFormat::ChatMl, &[("user", "hi")]),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            join(
                ChatFormat::Gemma,
                &[("system", "be brief"), ("user", "hi"), ("assistant", "yo"), ("user", "?")]
            ),
            "<start_of_turn>user\nbe brief\n\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n\
             <start_of_turn>user\n?<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            join(ChatFormat::Plain, &[("user", "hi")]),
            "User: hi\nAssistant:"
        );
    }
}
