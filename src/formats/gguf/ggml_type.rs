//! ggml tensor types: block geometry from ggml's type table.

/// A ggml tensor type: block geometry from ggml's type table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType {
    pub id: u32,
    /// Lowercase ggml name (`q4_k`, `f32`, ...).
    pub name: &'static str,
    /// Elements one block encodes.
    pub block_elems: u64,
    /// Bytes of one block.
    pub block_bytes: u64,
}

const GGML_TYPES: &[GgmlType] = &[
    GgmlType {
        id: 0,
        name: "f32",
        block_elems: 1,
        block_bytes: 4,
    },
    GgmlType {
        id: 1,
        name: "f16",
        block_elems: 1,
        block_bytes: 2,
    },
    GgmlType {
        id: 2,
        name: "q4_0",
        block_elems: 32,
        block_bytes: 18,
    },
    GgmlType {
        id: 3,
        name: "q4_1",
        block_elems: 32,
        block_bytes: 20,
    },
    GgmlType {
        id: 6,
        name: "q5_0",
        block_elems: 32,
        block_bytes: 22,
    },
    GgmlType {
        id: 7,
        name: "q5_1",
        block_elems: 32,
        block_bytes: 24,
    },
    GgmlType {
        id: 8,
        name: "q8_0",
        block_elems: 32,
        block_bytes: 34,
    },
    GgmlType {
        id: 9,
        name: "q8_1",
        block_elems: 32,
        block_bytes: 36,
    },
    GgmlType {
        id: 10,
        name: "q2_k",
        block_elems: 256,
        block_bytes: 84,
    },
    GgmlType {
        id: 11,
        name: "q3_k",
        block_elems: 256,
        block_bytes: 110,
    },
    GgmlType {
        id: 12,
        name: "q4_k",
        block_elems: 256,
        block_bytes: 144,
    },
    GgmlType {
        id: 13,
        name: "q5_k",
        block_elems: 256,
        block_bytes: 176,
    },
    GgmlType {
        id: 14,
        name: "q6_k",
        block_elems: 256,
        block_bytes: 210,
    },
    GgmlType {
        id: 15,
        name: "q8_k",
        block_elems: 256,
        block_bytes: 292,
    },
    GgmlType {
        id: 16,
        name: "iq2_xxs",
        block_elems: 256,
        block_bytes: 66,
    },
    GgmlType {
        id: 17,
        name: "iq2_xs",
        block_elems: 256,
        block_bytes: 74,
    },
    GgmlType {
        id: 18,
        name: "iq3_xxs",
        block_elems: 256,
        block_bytes: 98,
    },
    GgmlType {
        id: 19,
        name: "iq1_s",
        block_elems: 256,
        block_bytes: 50,
    },
    GgmlType {
        id: 20,
        name: "iq4_nl",
        block_elems: 32,
        block_bytes: 18,
    },
    GgmlType {
        id: 21,
        name: "iq3_s",
        block_elems: 256,
        block_bytes: 110,
    },
    GgmlType {
        id: 22,
        name: "iq2_s",
        block_elems: 256,
        block_bytes: 82,
    },
    GgmlType {
        id: 23,
        name: "iq4_xs",
        block_elems: 256,
        block_bytes: 136,
    },
    GgmlType {
        id: 24,
        name: "i8",
        block_elems: 1,
        block_bytes: 1,
    },
    GgmlType {
        id: 25,
        name: "i16",
        block_elems: 1,
        block_bytes: 2,
    },
    GgmlType {
        id: 26,
        name: "i32",
        block_elems: 1,
        block_bytes: 4,
    },
    GgmlType {
        id: 27,
        name: "i64",
        block_elems: 1,
        block_bytes: 8,
    },
    GgmlType {
        id: 28,
        name: "f64",
        block_elems: 1,
        block_bytes: 8,
    },
    GgmlType {
        id: 29,
        name: "iq1_m",
        block_elems: 256,
        block_bytes: 56,
    },
    GgmlType {
        id: 30,
        name: "bf16",
        block_elems: 1,
        block_bytes: 2,
    },
    GgmlType {
        id: 34,
        name: "tq1_0",
        block_elems: 256,
        block_bytes: 54,
    },
    GgmlType {
        id: 35,
        name: "tq2_0",
        block_elems: 256,
        block_bytes: 66,
    },
    GgmlType {
        id: 39,
        name: "mxfp4",
        block_elems: 32,
        block_bytes: 17,
    },
];

impl GgmlType {
    /// Looks a type up by its ggml id; removed and unknown ids are `None`.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.id == id)
    }

    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES.iter().copied().find(|t| t.name == name)
    }

    /// True for block-quantized types (stored as opaque `gguf.<type>/1`).
    pub fn is_quantized(self) -> bool {
        self.block_elems > 1
    }
}
