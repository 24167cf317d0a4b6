//! GBNF for the decimal integers of an inclusive range, exactly (JSON
//! syntax: optional `-`, no leading zeros, no `-0`).

use super::json_schema::MAX_INT_DIGITS;

fn digits(v: u128) -> u32 {
    let mut d = 1;
    let mut x = v / 10;
    while x > 0 {
        d += 1;
        x /= 10;
    }
    d
}

fn class(a: u8, b: u8) -> String {
    if a == b {
        format!("\"{}\"", a as char)
    } else {
        format!("[{}-{}]", a as char, b as char)
    }
}

fn any_digits(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => " [0-9]".into(),
        n => format!(" [0-9]{{{n}}}"),
    }
}

/// Equal-length digit strings `x <= y`: an expression for every numeral
/// between them.
fn same_len(x: &[u8], y: &[u8]) -> String {
    let n = x.len();
    if n == 0 {
        return String::new();
    }
    let rest = n - 1;
    if x[0] == y[0] {
        let tail = same_len(&x[1..], &y[1..]);
        return if tail.is_empty() {
            class(x[0], x[0])
        } else {
            format!("{} ({tail})", class(x[0], x[0]))
        };
    }
    if x[1..].iter().all(|&c| c == b'0') && y[1..].iter().all(|&c| c == b'9') {
        return format!("{}{}", class(x[0], y[0]), any_digits(rest));
    }
    let nines = vec![b'9'; rest];
    let zeros = vec![b'0'; rest];
    let mut alts = vec![format!(
        "{} ({})",
        class(x[0], x[0]),
        same_len(&x[1..], &nines)
    )];
    if x[0] + 1 < y[0] {
        alts.push(format!("{}{}", class(x[0] + 1, y[0] - 1), any_digits(rest)));
    }
    alts.push(format!(
        "{} ({})",
        class(y[0], y[0]),
        same_len(&zeros, &y[1..])
    ));
    alts.join(" | ")
}

/// Numerals of the non-negative integers in `[a, b]` (`b` None: unbounded).
fn nonneg(a: u128, b: Option<u128>) -> String {
    let da = digits(a);
    let pow = |d: u32| 10u128.pow(d);
    let mut alts = Vec::new();
    let span = |lo: u128, hi: u128| {
        let (x, y) = (lo.to_string(), hi.to_string());
        format!("({})", same_len(x.as_bytes(), y.as_bytes()))
    };
    match b {
        None => {
            // Open above: up to MAX_INT_DIGITS digits (more if the bound
            // itself has more), so a model cannot loop inside a number.
            alts.push(span(a, pow(da) - 1));
            let most = MAX_INT_DIGITS.max(da + 1) - 1;
            alts.push(format!("[1-9] [0-9]{{{da},{most}}}"));
        }
        Some(b) => {
            let db = digits(b);
            for d in da..=db {
                let lo = if d == da { a } else { pow(d - 1) };
                let hi = if d == db { b } else { pow(d) - 1 };
                alts.push(span(lo, hi));
            }
        }
    }
    alts.join(" | ")
}

/// Expression (without trailing space) for the integers in `[lo, hi]`;
/// `None` leaves a side open. The caller guarantees `lo <= hi`.
pub(crate) fn int_range(lo: Option<i64>, hi: Option<i64>) -> String {
    let (lo, hi) = (lo.map(i128::from), hi.map(i128::from));
    let mut alts = Vec::new();
    if lo.is_none_or(|l| l < 0) {
        let mag_lo = match hi {
            Some(h) if h < 0 => (-h) as u128,
            _ => 1,
        };
        let mag_hi = lo.map(|l| (-l) as u128);
        alts.push(format!("\"-\" ({})", nonneg(mag_lo, mag_hi)));
    }
    if hi.is_none_or(|h| h >= 0) {
        let a = lo.map_or(0, |l| l.max(0)) as u128;
        alts.push(format!("({})", nonneg(a, hi.map(|h| h as u128))));
    }
    alts.join(" | ")
}
