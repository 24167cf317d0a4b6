//! Byte-level BPE pre-tokenizers: every `tokenizer.ggml.pre` name llama.cpp
//! accepts for a byte-level vocabulary, each with its own list of split
//! expressions, run the way llama.cpp runs them.
//!
//! Each expression splits every current piece into its matches and the gaps
//! between them, in order. Two expressions (GPT-2's and Llama 3's) have
//! hand-written matchers in llama.cpp; we have the same, with the same
//! Unicode categories. Every other expression runs through `fancy-regex`
//! (it needs look-ahead) on the text as llama.cpp sees it: when the
//! expression names a Unicode category, every non-ASCII char is first
//! replaced by one stand-in per category (letter, number, punctuation, mark,
//! symbol, other; whitespace becomes `\x0B`) and `\p{..}` matches its
//! stand-in plus llama.cpp's ASCII members of that category; otherwise
//! non-ASCII whitespace becomes `\x0B`. `\s` is ASCII whitespace and `\d`,
//! `\w`, `\b` are ASCII, as in C++'s `std::regex`.

use crate::error::{Error, Result};
use fancy_regex::{Regex, RegexBuilder};
use unicode_general_category::{get_general_category, GeneralCategory as G};

/// A llama.cpp pre-tokenizer type (`LLAMA_VOCAB_PRE_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre {
    Default,
    Llama3,
    Jais2,
    Dbrx,
    Smaug,
    DeepseekLlm,
    Deepseek3Llm,
    Spark25,
    Youtu,
    DeepseekCoder,
    Falcon,
    Starcoder,
    Gpt2,
    Qwen2,
    Qwen35,
    Poro,
    Chatglm4,
    Viking,
    Tekken,
    Chameleon,
    Gpt4o,
    GraniteEmbMulti,
    TinyAya,
    Superbpe,
    Bailingmoe,
    SeedCoder,
    Ufakzeka,
    Grok2,
    Laguna,
    ExaoneMoe,
    Minicpm5,
}

/// What a `tokenizer.ggml.pre` name sets, as llama.cpp's vocabulary loader
/// does: the split rules, whether decoding cleans spaces, whether a word
/// that is a whole token skips merging, and the default of `add_bos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreInfo {
    pub pre: Pre,
    pub clean_spaces: bool,
    pub ignore_merges: bool,
    pub add_bos: bool,
}

const fn info(pre: Pre, clean_spaces: bool, ignore_merges: bool, add_bos: bool) -> PreInfo {
    PreInfo {
        pre,
        clean_spaces,
        ignore_merges,
        add_bos,
    }
}

/// Names llama.cpp knows but whose tokenizer is not byte-level BPE with
/// split expressions (SentencePiece-style BPE, a custom splitter, or a
/// whitespace splitter): refused by name rather than run wrong.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "whitespace",
    "kimi-k2",
    "afmoe",
];

/// The rules of a `tokenizer.ggml.pre` value; `None` (key absent) and
/// `"default"` are llama.cpp's default rules. An unknown name is an error,
/// as in llama.cpp.
pub fn lookup(name: Option<&str>) -> Result<PreInfo> {
    use Pre::*;
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(info(Default, true, false, false));
    };
    Ok(match name {
        "default" => info(Default, true, false, false),
        "minicpm5" => info(Minicpm5, true, true, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => info(Llama3, true, true, true),
        "deepseek-llm" => info(DeepseekLlm, false, false, false),
        "deepseek-coder" => info(DeepseekCoder, false, false, false),
        "deepseek-v3" | "hunyuan-dense" | "hy_v4" | "joyai-llm" => {
            info(Deepseek3Llm, false, false, false)
        }
        "spark2_5" => info(Spark25, false, false, false),
        "youtu" => info(Youtu, false, true, false),
        "falcon" => info(Falcon, true, false, false),
        "mpt" | "olmo" | "jais" | "exaone4" | "gpt-2" | "phi-2" | "jina-es" | "jina-de"
        | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert"
        | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => info(Gpt2, true, false, false),
        "trillion" | "granite-docling" => info(Gpt2, false, false, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
            info(Starcoder, true, false, false)
        }
        "command-r" | "smollm" => info(Starcoder, false, false, false),
        "jais-2" => info(Jais2, true, false, false),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
            info(Qwen2, false, false, false)
        }
        "megrez" | "stablelm2" => info(Qwen2, true, false, false),
        "qwen35" => info(Qwen35, false, false, false),
        "dbrx" => info(Dbrx, true, false, false),
        "smaug-bpe" => info(Smaug, true, false, false),
        "poro-chat" => info(Poro, false, false, false),
        "bloom" | "gpt3-finnish" => info(Poro, true, false, false),
        "glm4" | "chatglm-bpe" => info(Chatglm4, true, false, false),
        "viking" => info(Viking, false, false, false),
        "tekken" => info(Tekken, false, true, true),
        "chameleon" => info(Chameleon, false, false, true),
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
            info(Gpt4o, false, false, false)
        }
        "granite-embed-multi-97m" => info(GraniteEmbMulti, false, true, false),
        "tiny_aya" | "cohere2moe" => info(TinyAya, false, false, false),
        "superbpe" => info(Superbpe, false, false, false),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => info(Bailingmoe, false, false, false),
        "seed-coder" => info(SeedCoder, false, false, false),
        "ufakzeka" => info(Ufakzeka, false, false, false),
        "grok-2" => info(Grok2, false, false, false),
        "laguna" => info(Laguna, false, false, false),
        "exaone-moe" => info(ExaoneMoe, true, false, false),
        other if KNOWN_UNSUPPORTED.contains(&other) => {
            return Err(Error::Unsupported(format!(
                "tokenizer metadata tokenizer.ggml.pre: {other:?} is a llama.cpp \
                 pre-tokenizer this engine does not implement (it is not byte-level BPE \
                 with split expressions)"
            )))
        }
        other => {
            return Err(Error::Unsupported(format!(
                "tokenizer metadata tokenizer.ggml.pre: unknown pre-tokenizer type {other:?} \
                 (llama.cpp refuses it too)"
            )))
        }
    })
}

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const PORO: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";
const DEEPSEEK3_MAIN: &str = r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const CJK_KANA: &str = "[一-龥぀-ゟ゠-ヿ]+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split expressions of each type, in order (llama.cpp's
/// `llm_tokenizer_bpe` constructor).
fn rules(pre: Pre) -> &'static [&'static str] {
    use Pre::*;
    match pre {
        Default => &[
            r"[\p{P}\$\+<=>\^~\|]+",
            GPT2,
            r"\p{N}+",
            "[0-9][0-9][0-9]",
        ],
        Llama3 | Dbrx | Smaug => &[LLAMA3],
        Jais2 => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",
        ],
        // Code points that Unicode normalisation would change are escaped.
        DeepseekLlm => &[
            "[\r\n]",
            "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1F7D}ᾀ-ᾴᾶ-ᾼ\u{1FBE}ῂ-ῄῆ-ῌῐ-\u{1FD3}ῖ-\u{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u{2126}ℨ\u{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
            "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
            "\\s+$",
            "[一-龥ࠀ-一가-퟿]+",
            r"\p{N}+",
        ],
        Deepseek3Llm => &[r"\p{N}{1,3}", CJK_KANA, DEEPSEEK3_MAIN],
        Spark25 => &[
            r"\p{N}{1,3}",
            CJK_KANA,
            r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+",
            r"\p{N}",
        ],
        Youtu => &[
            "[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        DeepseekCoder => &[
            "[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            "[一-龥ࠀ-一가-퟿]+",
            r"\p{N}",
        ],
        Falcon => &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
        Starcoder => &[r"\p{N}", GPT2],
        Gpt2 => &[GPT2],
        Qwen2 => &[QWEN2],
        Qwen35 => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        Poro => &[PORO],
        Chatglm4 => &[LLAMA3],
        Viking => &[PORO, r"\p{N}"],
        Tekken => &[
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        Chameleon => &[
            "<sentinel:[0-9]+>",
            "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
            "([\\t\\n]|    |  )",
            r"\p{N}",
            r"[\p{P}!-/:-@\[-`{-~]",
            GPT2,
        ],
        Gpt4o => &[GPT4O],
        GraniteEmbMulti => &[
            r"[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        TinyAya => &[
            r"\d{1,3}(?=(?:\d{3})*\b)",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        Superbpe => &[r"\p{N}+", r"(?=(\d{3})+(?!\d))"],
        Bailingmoe => &[
            r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
        SeedCoder => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        Ufakzeka => &[
            r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
        Grok2 => &[QWEN2],
        Laguna => &[r"[^\n]+|[\n]+", QWEN2],
        ExaoneMoe => &[
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",
        ],
        Minicpm5 => &[
            r"\p{N}{1,3}",
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
        ],
    }
}

/// The coarse Unicode category llama.cpp's split rules see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cat {
    Letter,
    Number,
    Punct,
    Mark,
    Symbol,
    Other,
}

pub(crate) fn category(c: char) -> Cat {
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Cat::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Cat::Number,
        G::ConnectorPunctuation
        | G::DashPunctuation
        | G::OpenPunctuation
        | G::ClosePunctuation
        | G::InitialPunctuation
        | G::FinalPunctuation
        | G::OtherPunctuation => Cat::Punct,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark => Cat::Mark,
        G::MathSymbol | G::CurrencySymbol | G::ModifierSymbol | G::OtherSymbol => Cat::Symbol,
        _ => Cat::Other,
    }
}

/// Flags of one char for the hand-written matchers.
#[derive(Debug, Clone, Copy)]
struct Flags {
    letter: bool,
    number: bool,
    space: bool,
}

impl Flags {
    fn of(c: char) -> Flags {
        let cat = category(c);
        Flags {
            letter: cat == Cat::Letter,
            number: cat == Cat::Number,
            space: c.is_whitespace(),
        }
    }
}

/// One compiled split rule.
#[derive(Debug, Clone)]
enum Rule {
    Gpt2,
    /// Llama 3's expression, or Qwen 2's (the same with `\p{N}` for
    /// `\p{N}{1,3}`): the most digits one word takes.
    Llama3(usize),
    /// A regex and whether it runs on the category-collapsed text.
    Regex(Box<Regex>, bool),
}

/// A compiled pre-tokenizer.
#[derive(Debug, Clone)]
pub struct PreTokenizer {
    pub pre: Pre,
    rules: Vec<Rule>,
}

const CATEGORY_NAMES: &[&str] = &[
    r"\p{N}", r"\p{L}", r"\p{P}", r"\p{M}", r"\p{S}", r"\p{Lu}", r"\p{Ll}", r"\p{Lt}", r"\p{Lm}",
    r"\p{Lo}",
];

/// Stand-ins for non-ASCII chars in the collapsed text.
const STAND_OTHER: char = '\u{E0D0}';
const STAND_NUMBER: char = '\u{E0D1}';
const STAND_LETTER: char = '\u{E0D2}';
const STAND_PUNCT: char = '\u{E0D3}';
const STAND_MARK: char = '\u{E0D4}';
const STAND_SYMBOL: char = '\u{E0D5}';
const ASCII_SPACE: &str = r"\t\n\x0B\x0C\r ";
const ASCII_WORD: &str = "A-Za-z0-9_";

/// llama.cpp's expression rewritten for `fancy-regex` on our text.
fn translate(expr: &str, collapsed: bool) -> String {
    let mut out = String::with_capacity(expr.len() * 2);
    let mut inside = false;
    // A class body, bracketed when it stands alone.
    let class = |out: &mut String, inside: bool, body: &str| {
        if inside {
            out.push_str(body);
        } else {
            out.push('[');
            out.push_str(body);
            out.push(']');
        }
    };
    let mut it = expr.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            match c {
                '[' if !inside => inside = true,
                ']' if inside => inside = false,
                _ => {}
            }
            out.push(c);
            continue;
        }
        let Some(e) = it.next() else {
            out.push('\\');
            break;
        };
        match e {
            'p' if collapsed && it.peek() == Some(&'{') => {
                it.next();
                let name: String = it.by_ref().take_while(|&ch| ch != '}').collect();
                let body = match name.as_str() {
                    "N" => format!("{STAND_NUMBER}0-9"),
                    "L" | "Lu" | "Ll" | "Lt" | "Lm" | "Lo" => format!("{STAND_LETTER}A-Za-z"),
                    "P" => format!(r"{STAND_PUNCT}!-#%-*,-/:;?@\[-\]_\{{\}}"),
                    "M" => format!("{STAND_MARK}"),
                    "S" => format!(r"{STAND_SYMBOL}\$\+<->\^`\|"),
                    other => format!(r"\p{{{other}}}"),
                };
                class(&mut out, inside, &body);
            }
            's' => class(&mut out, inside, ASCII_SPACE),
            // Only used outside classes in llama.cpp's expressions.
            'S' => out.push_str(&format!("[^{ASCII_SPACE}]")),
            'd' => class(&mut out, inside, "0-9"),
            'w' => class(&mut out, inside, ASCII_WORD),
            'b' => out.push_str(
                "(?:(?<=[A-Za-z0-9_])(?![A-Za-z0-9_])|(?<![A-Za-z0-9_])(?=[A-Za-z0-9_]))",
            ),
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

/// Compiles with no backtracking step budget, as llama.cpp's `std::regex`
/// has none: over a whitespace run one match takes O(run) steps
/// (`\s*[\r\n]+` scans the run before giving it back) and consumes the run,
/// so a split stays linear. fancy-regex's backtracking stack (about a
/// million entries) still bounds one match: past it the rest of the piece
/// stays one word. The hand-written matchers (GPT-2, Llama 3, Qwen 2) have
/// no such bound.
fn compile(pattern: &str) -> std::result::Result<Regex, String> {
    RegexBuilder::new(pattern)
        .backtrack_limit(usize::MAX)
        .build()
        .map_err(|e| e.to_string())
}

impl PreTokenizer {
    pub fn new(pre: Pre) -> Result<PreTokenizer> {
        let mut compiled = Vec::new();
        for &expr in rules(pre) {
            let rule = if expr == GPT2 {
                Rule::Gpt2
            } else if expr == LLAMA3 {
                Rule::Llama3(3)
            } else if expr == QWEN2 {
                // Not hand-written in llama.cpp, but the same matcher with
                // one digit a word gives what its regex gives (tested), and
                // it has no backtracking stack to overflow on long runs.
                Rule::Llama3(1)
            } else {
                let collapsed = CATEGORY_NAMES.iter().any(|n| expr.contains(n));
                let re = compile(&translate(expr, collapsed)).map_err(|e| {
                    Error::Unsupported(format!("pre-tokenizer {pre:?}: expression {expr:?}: {e}"))
                })?;
                Rule::Regex(Box::new(re), collapsed)
            };
            compiled.push(rule);
        }
        Ok(PreTokenizer {
            pre,
            rules: compiled,
        })
    }

    /// Every rule through the regex engine, even those with a hand-written
    /// matcher: the twin the matchers are tested against.
    #[cfg(test)]
    pub fn regex_only(pre: Pre) -> Result<PreTokenizer> {
        let mut compiled = Vec::new();
        for &expr in rules(pre) {
            let collapsed = CATEGORY_NAMES.iter().any(|n| expr.contains(n));
            let re = compile(&translate(expr, collapsed))
                .map_err(|e| Error::Unsupported(format!("{expr:?}: {e}")))?;
            compiled.push(Rule::Regex(Box::new(re), collapsed));
        }
        Ok(PreTokenizer {
            pre,
            rules: compiled,
        })
    }

    /// Splits `text` into the words BPE merges within.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let cs: Vec<char> = text.chars().collect();
        let n = cs.len();
        if n == 0 {
            return Vec::new();
        }
        let flags: Vec<Flags> = cs.iter().map(|&c| Flags::of(c)).collect();
        // Pieces as lengths in chars, as llama.cpp keeps them.
        let mut pieces = vec![n];
        let mut views: [Option<View>; 2] = [None, None];
        for rule in &self.rules {
            let mut next = Vec::with_capacity(pieces.len());
            let mut start = 0usize;
            for &len in &pieces {
                let (a, b) = (start, start + len);
                match rule {
                    Rule::Gpt2 => gpt2(&cs[a..b], &flags[a..b], &mut next),
                    Rule::Llama3(digits) => llama3(&cs[a..b], &flags[a..b], *digits, &mut next),
                    Rule::Regex(re, collapsed) => {
                        let view = views[usize::from(*collapsed)]
                            .get_or_insert_with(|| View::new(&cs, &flags, *collapsed));
                        view.split(re, a, b, &mut next);
                    }
                }
                start = b;
            }
            pieces = next;
        }
        let offs: Vec<usize> = text
            .char_indices()
            .map(|(o, _)| o)
            .chain([text.len()])
            .collect();
        let mut out = Vec::with_capacity(pieces.len());
        let mut start = 0usize;
        for len in pieces {
            if len > 0 {
                out.push(&text[offs[start]..offs[start + len]]);
            }
            start += len;
        }
        out
    }
}

/// The text as a regex sees it, with a map from its byte offsets back to
/// char indices.
struct View {
    text: String,
    /// Byte offset in `text` of each char, plus the end.
    offs: Vec<usize>,
    /// Char index of each byte offset that starts a char (or the end).
    chars_at: Vec<u32>,
}

impl View {
    fn new(cs: &[char], flags: &[Flags], collapsed: bool) -> View {
        let mut text = String::with_capacity(cs.len());
        let mut offs = Vec::with_capacity(cs.len() + 1);
        for (&c, f) in cs.iter().zip(flags) {
            offs.push(text.len());
            let shown = if (c as u32) < 128 {
                c
            } else if f.space {
                '\x0B'
            } else if !collapsed {
                c
            } else {
                match category(c) {
                    Cat::Letter => STAND_LETTER,
                    Cat::Number => STAND_NUMBER,
                    Cat::Punct => STAND_PUNCT,
                    Cat::Mark => STAND_MARK,
                    Cat::Symbol => STAND_SYMBOL,
                    Cat::Other => STAND_OTHER,
                }
            };
            text.push(shown);
        }
        offs.push(text.len());
        let mut chars_at = vec![0u32; text.len() + 1];
        for (i, &o) in offs.iter().enumerate() {
            chars_at[o] = i as u32;
        }
        View {
            text,
            offs,
            chars_at,
        }
    }

    /// Splits chars `a..b` into matches and gaps, pushing their lengths.
    fn split(&self, re: &Regex, a: usize, b: usize, out: &mut Vec<usize>) {
        let (lo, hi) = (self.offs[a], self.offs[b]);
        let hay = &self.text[lo..hi];
        let mut last = a;
        for m in re.find_iter(hay) {
            // With no backtracking budget a search cannot fail; were it to,
            // the rest of the piece stays one word, as an unmatched gap.
            let Ok(m) = m else { break };
            let s = self.chars_at[lo + m.start()] as usize;
            let e = self.chars_at[lo + m.end()] as usize;
            if s > last {
                out.push(s - last);
            }
            if e > s {
                out.push(e - s);
            }
            last = e;
        }
        if b > last {
            out.push(b - last);
        }
    }
}

fn is_rn(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// llama.cpp's hand-written matcher for
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// over one piece, pushing word lengths.
fn gpt2(cs: &[char], fl: &[Flags], out: &mut Vec<usize>) {
    let n = cs.len();
    let f = |i: usize| fl.get(i).copied();
    let mut pos = 0usize;
    while pos < n {
        let start = pos;
        let c = cs[pos];
        if c == '\'' && pos + 1 < n {
            let nx = cs[pos + 1];
            if matches!(nx, 's' | 't' | 'm' | 'd') {
                out.push(2);
                pos += 2;
                continue;
            }
            if pos + 2 < n && matches!((nx, cs[pos + 2]), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                out.push(3);
                pos += 3;
                continue;
            }
        }
        let f2 = if c == ' ' { f(pos + 1) } else { f(pos) };
        let run = |mut p: usize, keep: &dyn Fn(Flags) -> bool| {
            while f(p).is_some_and(keep) {
                p += 1;
            }
            p
        };
        let sp = usize::from(c == ' ');
        if let Some(f2) = f2 {
            let end = if f2.letter {
                Some(run(pos + sp, &|x| x.letter))
            } else if f2.number {
                Some(run(pos + sp, &|x| x.number))
            } else if !(f2.space || f2.letter || f2.number) {
                Some(run(pos + sp, &|x| !(x.space || x.letter || x.number)))
            } else {
                None
            };
            if let Some(end) = end {
                out.push(end - start);
                pos = end;
                continue;
            }
        }
        let nws = run(pos, &|x| x.space) - pos;
        pos += if nws > 1 && pos + nws < n {
            nws - 1
        } else if nws > 0 {
            nws
        } else {
            1
        };
        out.push(pos - start);
    }
}

/// llama.cpp's hand-written matcher for Llama 3's expression
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`, with `max_digits`
/// in place of 3.
fn llama3(cs: &[char], fl: &[Flags], max_digits: usize, out: &mut Vec<usize>) {
    let n = cs.len();
    let f = |i: usize| fl.get(i).copied();
    let letter = |i: usize| f(i).is_some_and(|x| x.letter);
    let number = |i: usize| f(i).is_some_and(|x| x.number);
    let mut pos = 0usize;
    while pos < n {
        let start = pos;
        let c = cs[pos];
        if c == '\'' && pos + 1 < n {
            let nx = cs[pos + 1].to_ascii_lowercase();
            if matches!(nx, 's' | 't' | 'm' | 'd') {
                out.push(2);
                pos += 2;
                continue;
            }
            if pos + 2 < n
                && matches!(
                    (nx, cs[pos + 2].to_ascii_lowercase()),
                    ('r', 'e') | ('v', 'e') | ('l', 'l')
                )
            {
                out.push(3);
                pos += 3;
                continue;
            }
        }
        if !(is_rn(c) || number(pos)) && (letter(pos) || letter(pos + 1)) {
            pos += 1;
            while letter(pos) {
                pos += 1;
            }
            out.push(pos - start);
            continue;
        }
        if number(pos) {
            let mut ini = pos;
            while number(pos) {
                pos += 1;
                if pos - ini >= max_digits {
                    out.push(pos - ini);
                    ini = pos;
                }
            }
            if pos > ini {
                out.push(pos - ini);
            }
            continue;
        }
        let f2 = if c == ' ' { f(pos + 1) } else { f(pos) };
        if let Some(f2) = f2.filter(|x| !(x.space || x.letter || x.number)) {
            let _ = f2;
            pos += usize::from(c == ' ');
            while f(pos).is_some_and(|x| !(x.space || x.letter || x.number)) {
                pos += 1;
            }
            while pos < n && is_rn(cs[pos]) {
                pos += 1;
            }
            out.push(pos - start);
            continue;
        }
        let mut nws = 0usize;
        let mut last_rn = None;
        while f(pos + nws).is_some_and(|x| x.space) {
            if is_rn(cs[pos + nws]) {
                last_rn = Some(pos + nws + 1);
            }
            nws += 1;
        }
        pos = if let Some(e) = last_rn {
            e
        } else if nws > 1 && pos + nws < n {
            pos + nws - 1
        } else if nws > 0 {
            pos + nws
        } else {
            pos + 1
        };
        out.push(pos - start);
    }
}
