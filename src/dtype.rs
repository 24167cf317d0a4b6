//! Storage dtypes (the closed set of 12) and registered logical types.

use std::fmt;
use std::str::FromStr;

/// A storage type: byte width and endianness only; every bit pattern valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
}

impl DType {
    pub const ALL: [DType; 12] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U64,
        DType::U32,
        DType::U16,
        DType::U8,
    ];

    /// Width of one element in bytes.
    pub fn width(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 => 1,
        }
    }

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U64 => "u64",
            DType::U32 => "u32",
            DType::U16 => "u16",
            DType::U8 => "u8",
        }
    }

    /// The numpy type code (`<f4`, `|u1`, ...), for `.npy` output.
    pub fn numpy_descr(self) -> &'static str {
        match self {
            DType::F64 => "<f8",
            DType::F32 => "<f4",
            DType::F16 => "<f2",
            DType::BF16 => "<V2",
            DType::I64 => "<i8",
            DType::I32 => "<i4",
            DType::I16 => "<i2",
            DType::I8 => "|i1",
            DType::U64 => "<u8",
            DType::U32 => "<u4",
            DType::U16 => "<u2",
            DType::U8 => "|u1",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.as_str() == s)
            .ok_or(())
    }
}

/// A registered logical type (spec appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogicalType {
    Bool,
    F8E4M3Fn,
    F8E5M2,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    F8E8M0,
    F4E2M1,
    Complex64,
    Complex128,
}

impl LogicalType {
    pub const ALL: [LogicalType; 9] = [
        LogicalType::Bool,
        LogicalType::F8E4M3Fn,
        LogicalType::F8E5M2,
        LogicalType::F8E4M3Fnuz,
        LogicalType::F8E5M2Fnuz,
        LogicalType::F8E8M0,
        LogicalType::F4E2M1,
        LogicalType::Complex64,
        LogicalType::Complex128,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogicalType::Bool => "bool",
            LogicalType::F8E4M3Fn => "f8_e4m3fn",
            LogicalType::F8E5M2 => "f8_e5m2",
            LogicalType::F8E4M3Fnuz => "f8_e4m3fnuz",
            LogicalType::F8E5M2Fnuz => "f8_e5m2fnuz",
            LogicalType::F8E8M0 => "f8_e8m0",
            LogicalType::F4E2M1 => "f4_e2m1",
            LogicalType::Complex64 => "complex64",
            LogicalType::Complex128 => "complex128",
        }
    }

    /// The storage dtype this logical type requires.
    pub fn storage(self) -> DType {
        match self {
            LogicalType::Complex64 => DType::F32,
            LogicalType::Complex128 => DType::F64,
            _ => DType::U8,
        }
    }

    /// Bytes needed for `n` logical elements, `None` on overflow.
    pub fn size_of(self, n: u64) -> Option<u64> {
        match self {
            LogicalType::F4E2M1 => Some(n / 2 + n % 2),
            LogicalType::Complex64 => n.checked_mul(8),
            LogicalType::Complex128 => n.checked_mul(16),
            _ => Some(n),
        }
    }
}

impl FromStr for LogicalType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        LogicalType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or(())
    }
}

impl fmt::Display for LogicalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The element type of a part: storage dtype plus optional logical type,
/// which may be one we do not know (kept for structural access).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ElementType {
    pub dtype: DType,
    pub logical: Option<Logical>,
}

/// A logical type as written in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Logical {
    Known(LogicalType),
    Unknown(String),
}

impl Logical {
    pub fn parse(s: &str) -> Logical {
        match s.parse() {
            Ok(t) => Logical::Known(t),
            Err(()) => Logical::Unknown(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Logical::Known(t) => t.as_str(),
            Logical::Unknown(s) => s,
        }
    }
}

impl ElementType {
    pub fn plain(dtype: DType) -> ElementType {
        ElementType {
            dtype,
            logical: None,
        }
    }

    pub fn logical(t: LogicalType) -> ElementType {
        ElementType {
            dtype: t.storage(),
            logical: Some(Logical::Known(t)),
        }
    }

    /// Bytes for `n` elements; `None` on overflow or for an unknown
    /// logical type (whose size function we cannot know).
    pub fn size_of(&self, n: u64) -> Option<u64> {
        match &self.logical {
            None => n.checked_mul(self.dtype.width() as u64),
            Some(Logical::Known(t)) => t.size_of(n),
            Some(Logical::Unknown(_)) => None,
        }
    }

    /// The user-facing name: the logical type if any, else the dtype.
    pub fn name(&self) -> &str {
        match &self.logical {
            Some(l) => l.as_str(),
            None => self.dtype.as_str(),
        }
    }

    /// Parses a user-facing name (`f32`, `bool`, `complex64`, ...).
    pub fn from_name(s: &str) -> Option<ElementType> {
        if let Ok(d) = s.parse::<DType>() {
            return Some(ElementType::plain(d));
        }
        s.parse::<LogicalType>().ok().map(ElementType::logical)
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.as_str().parse::<DType>(), Ok(d));
        }
        for t in LogicalType::ALL {
            assert_eq!(t.as_str().parse::<LogicalType>(), Ok(t));
            assert_eq!(
                ElementType::from_name(t.as_str()).unwrap().dtype,
                t.storage()
            );
        }
        assert!("bool".parse::<DType>().is_err());
    }

    #[test]
    fn size_functions() {
        assert_eq!(LogicalType::F4E2M1.size_of(5), Some(3));
        assert_eq!(LogicalType::F4E2M1.size_of(4), Some(2));
        assert_eq!(LogicalType::Complex64.size_of(3), Some(24));
        assert_eq!(LogicalType::Complex128.size_of(u64::MAX), None);
        assert_eq!(ElementType::plain(DType::F32).size_of(u64::MAX / 2), None);
        let unknown = ElementType {
            dtype: DType::U8,
            logical: Some(Logical::Unknown("x".into())),
        };
        assert_eq!(unknown.size_of(1), None);
    }
}
