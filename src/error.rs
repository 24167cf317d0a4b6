//! One error type for the whole crate, grouped by fault.
//!
//! Every rejection of a malformed file carries a [`Rule`]: a stable id that
//! also appears in `spec/ztensor.md` §12, so a message can be looked up.

use std::fmt;
use std::io;

/// A rule our reader enforces. The id (`Rule::id`) is stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    FileTooSmall,
    HeaderMagic,
    FooterMagic,
    VersionUnsupported,
    DataShardFooter,
    ManifestOutOfBounds,
    ManifestTooLarge,
    ManifestMisaligned,
    ManifestHashMismatch,
    CborSyntax,
    CborNonShortest,
    CborIndefinite,
    CborTag,
    CborUnsortedKeys,
    CborDuplicateKey,
    CborTrailingBytes,
    CborDepth,
    CborFloat,
    SchemaType,
    SchemaMissingField,
    SchemaBlobArity,
    SchemaUnknownDtype,
    SchemaLtypeDtypeMismatch,
    SchemaEncodingLength,
    SchemaDigestFormat,
    SchemaEmptyParts,
    AttributeKey,
    NameEmpty,
    NameNul,
    NameTooLong,
    ShapeRank,
    ShapeOverflow,
    BlobBelowFloor,
    BlobMisaligned,
    BlobOutOfBounds,
    BlobPartialOverlap,
    ShardName,
    ShardUnknown,
    ShardEntry,
    ShardFile,
    ShardDigest,
    DenseParts,
    DenseSize,
    CsrMetadata,
    CsrData,
    CooMetadata,
    CooData,
    GgufMetadata,
    BoolByte,
    F4Nibble,
    DigestMismatch,
    ZstdSeekTable,
    ZstdFrame,
    ZstdLength,
}

impl Rule {
    /// Every rule, in spec order (the index + 1 is the spec number).
    pub const ALL: &'static [Rule] = &[
        Rule::FileTooSmall,
        Rule::HeaderMagic,
        Rule::FooterMagic,
        Rule::VersionUnsupported,
        Rule::DataShardFooter,
        Rule::ManifestOutOfBounds,
        Rule::ManifestTooLarge,
        Rule::ManifestMisaligned,
        Rule::ManifestHashMismatch,
        Rule::CborSyntax,
        Rule::CborNonShortest,
        Rule::CborIndefinite,
        Rule::CborTag,
        Rule::CborUnsortedKeys,
        Rule::CborDuplicateKey,
        Rule::CborTrailingBytes,
        Rule::CborDepth,
        Rule::CborFloat,
        Rule::SchemaType,
        Rule::SchemaMissingField,
        Rule::SchemaBlobArity,
        Rule::SchemaUnknownDtype,
        Rule::SchemaLtypeDtypeMismatch,
        Rule::SchemaEncodingLength,
        Rule::SchemaDigestFormat,
        Rule::SchemaEmptyParts,
        Rule::AttributeKey,
        Rule::NameEmpty,
        Rule::NameNul,
        Rule::NameTooLong,
        Rule::ShapeRank,
        Rule::ShapeOverflow,
        Rule::BlobBelowFloor,
        Rule::BlobMisaligned,
        Rule::BlobOutOfBounds,
        Rule::BlobPartialOverlap,
        Rule::ShardName,
        Rule::ShardUnknown,
        Rule::ShardEntry,
        Rule::ShardFile,
        Rule::ShardDigest,
        Rule::DenseParts,
        Rule::DenseSize,
        Rule::CsrMetadata,
        Rule::CsrData,
        Rule::CooMetadata,
        Rule::CooData,
        Rule::GgufMetadata,
        Rule::BoolByte,
        Rule::F4Nibble,
        Rule::DigestMismatch,
        Rule::ZstdSeekTable,
        Rule::ZstdFrame,
        Rule::ZstdLength,
    ];

    /// The stable kebab-case id used in messages and in the spec.
    pub fn id(self) -> &'static str {
        match self {
            Rule::FileTooSmall => "file-too-small",
            Rule::HeaderMagic => "header-magic",
            Rule::FooterMagic => "footer-magic",
            Rule::VersionUnsupported => "version-unsupported",
            Rule::DataShardFooter => "data-shard-footer",
            Rule::ManifestOutOfBounds => "manifest-out-of-bounds",
            Rule::ManifestTooLarge => "manifest-too-large",
            Rule::ManifestMisaligned => "manifest-misaligned",
            Rule::ManifestHashMismatch => "manifest-hash-mismatch",
            Rule::CborSyntax => "cbor-syntax",
            Rule::CborNonShortest => "cbor-non-shortest",
            Rule::CborIndefinite => "cbor-indefinite",
            Rule::CborTag => "cbor-tag",
            Rule::CborUnsortedKeys => "cbor-unsorted-keys",
            Rule::CborDuplicateKey => "cbor-duplicate-key",
            Rule::CborTrailingBytes => "cbor-trailing-bytes",
            Rule::CborDepth => "cbor-depth",
            Rule::CborFloat => "cbor-float",
            Rule::SchemaType => "schema-type",
            Rule::SchemaMissingField => "schema-missing-field",
            Rule::SchemaBlobArity => "schema-blob-arity",
            Rule::SchemaUnknownDtype => "schema-unknown-dtype",
            Rule::SchemaLtypeDtypeMismatch => "schema-ltype-dtype-mismatch",
            Rule::SchemaEncodingLength => "schema-encoding-length",
            Rule::SchemaDigestFormat => "schema-digest-format",
            Rule::SchemaEmptyParts => "schema-empty-parts",
            Rule::AttributeKey => "attribute-key",
            Rule::NameEmpty => "name-empty",
            Rule::NameNul => "name-nul",
            Rule::NameTooLong => "name-too-long",
            Rule::ShapeRank => "shape-rank",
            Rule::ShapeOverflow => "shape-overflow",
            Rule::BlobBelowFloor => "blob-below-floor",
            Rule::BlobMisaligned => "blob-misaligned",
            Rule::BlobOutOfBounds => "blob-out-of-bounds",
            Rule::BlobPartialOverlap => "blob-partial-overlap",
            Rule::ShardName => "shard-name",
            Rule::ShardUnknown => "shard-unknown",
            Rule::ShardEntry => "shard-entry",
            Rule::ShardFile => "shard-file",
            Rule::ShardDigest => "shard-digest",
            Rule::DenseParts => "dense-parts",
            Rule::DenseSize => "dense-size",
            Rule::CsrMetadata => "csr-metadata",
            Rule::CsrData => "csr-data",
            Rule::CooMetadata => "coo-metadata",
            Rule::CooData => "coo-data",
            Rule::GgufMetadata => "gguf-metadata",
            Rule::BoolByte => "bool-byte",
            Rule::F4Nibble => "f4-nibble",
            Rule::DigestMismatch => "digest-mismatch",
            Rule::ZstdSeekTable => "zstd-seek-table",
            Rule::ZstdFrame => "zstd-frame",
            Rule::ZstdLength => "zstd-length",
        }
    }

    /// The rule's number in the spec's reject list (R1, R2, ...).
    pub fn number(self) -> usize {
        Rule::ALL
            .iter()
            .position(|r| *r == self)
            .map_or(0, |i| i + 1)
    }

    /// Looks a rule up by its id.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.id() == id)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Everything that can go wrong, grouped by whose fault it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system refused an operation.
    #[error("i/o error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The file breaks a rule of the format.
    #[error("{rule}: {detail}")]
    Corrupt {
        rule: Rule,
        /// Absolute byte offset in the file, when one applies.
        offset: Option<u64>,
        detail: String,
    },
    /// Stored bytes do not match their digest.
    #[error(
        "{}: {object}/{part}: {algorithm} digest mismatch (manifest {expected}, computed {actual})",
        Rule::DigestMismatch
    )]
    Checksum {
        object: String,
        part: String,
        algorithm: String,
        expected: String,
        actual: String,
    },
    /// A value is legal but larger than a configured limit.
    #[error("limit: {what} is {value}, above the limit of {limit}")]
    Limit {
        what: String,
        value: u64,
        limit: u64,
    },
    /// A file of another format (GGUF, ...) breaks that format's rules.
    /// `rule` is a stable id such as `gguf-string-length`.
    #[error("{rule}: {detail}")]
    Foreign {
        format: &'static str,
        rule: &'static str,
        offset: Option<u64>,
        detail: String,
    },
    /// A name the caller asked for does not exist.
    #[error("{kind} not found: {name:?}")]
    NotFound { kind: &'static str, name: String },
    /// The file is valid but uses something this reader cannot interpret
    /// (unknown layout, logical type or encoding).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller used the API in a way it does not allow.
    #[error("invalid use: {0}")]
    Usage(String),
    /// The caller asked a writer for something a reader would reject: the
    /// format rule it breaks, kept so the writer's refusal names the same
    /// rule id as the reader's would.
    #[error("invalid use: {rule}: {detail}")]
    Invalid { rule: Rule, detail: String },
    /// An engine snapshot or state cannot be restored (the engine is left
    /// as it was).
    #[error("snapshot {fault}: {detail}")]
    Snapshot {
        fault: SnapshotFault,
        detail: String,
    },
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotFault {
    /// It was taken with a model of other weights.
    Fingerprint,
    /// It was taken with another tokenizer.
    Tokenizer,
    /// Its shapes, types or counts do not fit this engine.
    Incompatible,
    /// It is not a well-formed snapshot (truncated, corrupt, missing parts).
    Malformed,
}

impl SnapshotFault {
    pub fn name(self) -> &'static str {
        match self {
            SnapshotFault::Fingerprint => "fingerprint-mismatch",
            SnapshotFault::Tokenizer => "tokenizer-mismatch",
            SnapshotFault::Incompatible => "incompatible",
            SnapshotFault::Malformed => "malformed",
        }
    }
}

impl std::fmt::Display for SnapshotFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Error {
    pub(crate) fn corrupt(rule: Rule, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            rule,
            offset: None,
            detail: detail.into(),
        }
    }

    pub(crate) fn corrupt_at(rule: Rule, offset: u64, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            rule,
            offset: Some(offset),
            detail: detail.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn usage(detail: impl Into<String>) -> Error {
        Error::Usage(detail.into())
    }

    /// A core check's error seen from the writer: a format violation
    /// becomes [`Error::Invalid`] with the same rule (the caller's input,
    /// not a file, broke it); every other error passes through unchanged.
    pub(crate) fn refused(self) -> Error {
        match self {
            Error::Corrupt { rule, detail, .. } => Error::Invalid { rule, detail },
            other => other,
        }
    }

    /// The rule this error reports, if it is a format violation (or a
    /// writer's refusal of input that would be one).
    pub fn rule(&self) -> Option<Rule> {
        match self {
            Error::Corrupt { rule, .. } | Error::Invalid { rule, .. } => Some(*rule),
            Error::Checksum { .. } => Some(Rule::DigestMismatch),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
