//! Part digests over decoded bytes: `xxh3`, `sha256` (upstream's) and our
//! `crc32c`, `blake3`. Strings are `<algorithm>:<lowercase hex>`.

use sha2::Digest as _;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    Xxh3,
    Sha256,
    Crc32c,
    Blake3,
}

impl DigestAlg {
    pub const ALL: [DigestAlg; 4] = [
        DigestAlg::Xxh3,
        DigestAlg::Sha256,
        DigestAlg::Crc32c,
        DigestAlg::Blake3,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlg::Xxh3 => "xxh3",
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Crc32c => "crc32c",
            DigestAlg::Blake3 => "blake3",
        }
    }

    /// Number of hex digits in this algorithm's digest string.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlg::Xxh3 => 16,
            DigestAlg::Crc32c => 8,
            DigestAlg::Sha256 | DigestAlg::Blake3 => 64,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            DigestAlg::Xxh3 => Hasher::Xxh3(Box::default()),
            DigestAlg::Sha256 => Hasher::Sha256(Box::default()),
            DigestAlg::Crc32c => Hasher::Crc32c(0),
            DigestAlg::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    /// Digest of a whole buffer, as a manifest string.
    pub fn digest(self, bytes: &[u8]) -> String {
        match self {
            // blake3 parallelises a single large input across cores.
            DigestAlg::Blake3 if bytes.len() >= 1 << 20 => {
                let mut h = blake3::Hasher::new();
                h.update_rayon(bytes);
                format!("blake3:{}", h.finalize().to_hex())
            }
            _ => {
                let mut h = self.hasher();
                h.update(bytes);
                h.finish()
            }
        }
    }
}

impl fmt::Display for DigestAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DigestAlg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        DigestAlg::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or(())
    }
}

/// An incremental digest, for streamed parts.
pub enum Hasher {
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
    Sha256(Box<sha2::Sha256>),
    Crc32c(u32),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Xxh3(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    /// The manifest digest string.
    pub fn finish(self) -> String {
        match self {
            Hasher::Xxh3(h) => format!("xxh3:{:016x}", h.digest()),
            Hasher::Sha256(h) => format!("sha256:{}", hex(&h.finalize())),
            Hasher::Crc32c(c) => format!("crc32c:{c:08x}"),
            Hasher::Blake3(h) => format!("blake3:{}", h.finalize().to_hex()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A digest string from a manifest, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DigestString {
    /// `None` for an algorithm we do not know (readable, not verifiable).
    pub alg: Option<DigestAlg>,
    pub text: String,
}

impl DigestString {
    /// Parses `<alg>:<lowercase hex>`. Known algorithms must have the exact
    /// length; unknown ones just need a plausible shape.
    pub fn parse(s: &str) -> Result<DigestString, String> {
        let (alg, hexpart) = s
            .split_once(':')
            .ok_or_else(|| format!("digest {s:?} has no '<algorithm>:' prefix"))?;
        let alg_ok = !alg.is_empty()
            && alg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !alg_ok {
            return Err(format!("digest {s:?} has a malformed algorithm name"));
        }
        if hexpart.is_empty()
            || !hexpart
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(format!("digest {s:?} is not lowercase hex"));
        }
        let known = alg.parse::<DigestAlg>().ok();
        if let Some(a) = known {
            if hexpart.len() != a.hex_len() {
                return Err(format!(
                    "{alg} digest must have {} hex digits, {s:?} has {}",
                    a.hex_len(),
                    hexpart.len()
                ));
            }
        }
        Ok(DigestString {
            alg: known,
            text: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // xxh3-64 of "" and of 1,2,3,4 as f32 (the upstream hex-dump example).
        assert_eq!(DigestAlg::Xxh3.digest(b""), "xxh3:2d06800538d394c2");
        let data: Vec<u8> = [1f32, 2., 3., 4.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(DigestAlg::Xxh3.digest(&data), "xxh3:a82f522ec4510db4");
        // CRC-32C check value.
        assert_eq!(DigestAlg::Crc32c.digest(b"123456789"), "crc32c:e3069283");
        assert_eq!(
            DigestAlg::Sha256.digest(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            DigestAlg::Blake3.digest(b""),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        for alg in DigestAlg::ALL {
            let mut h = alg.hasher();
            for c in data.chunks(65_537) {
                h.update(c);
            }
            assert_eq!(h.finish(), alg.digest(&data), "{alg}");
        }
    }

    #[test]
    fn parse_rules() {
        assert!(DigestString::parse("xxh3:a82f522ec4510db4").is_ok());
        assert!(DigestString::parse("xxh3:A82F522EC4510DB4").is_err());
        assert!(DigestString::parse("xxh3:a82f").is_err());
        assert!(DigestString::parse("nohex").is_err());
        let unknown = DigestString::parse("md5:d41d8cd98f00b204e9800998ecf8427e").unwrap();
        assert_eq!(unknown.alg, None);
    }
}
