use super::*;
use crate::error::Rule;

fn rule_of(bytes: &[u8]) -> Rule {
    decode(bytes).unwrap_err().rule().unwrap()
}

#[test]
fn integers_round_trip_in_shortest_form() {
    for n in [
        0u64,
        23,
        24,
        255,
        256,
        65535,
        65536,
        u32::MAX as u64,
        u64::MAX,
    ] {
        let enc = encode(&Value::Uint(n)).unwrap();
        assert_eq!(decode(&enc).unwrap(), Value::Uint(n));
        let enc = encode(&Value::Nint(n)).unwrap();
        assert_eq!(decode(&enc).unwrap(), Value::Nint(n));
    }
    assert_eq!(encode(&Value::Uint(24)).unwrap(), vec![0x18, 24]);
    assert_eq!(encode(&Value::Uint(65536)).unwrap(), vec![0x1a, 0, 1, 0, 0]);
}

#[test]
fn non_shortest_heads_are_rejected() {
    assert_eq!(rule_of(&[0x18, 5]), Rule::CborNonShortest);
    assert_eq!(rule_of(&[0x19, 0, 200]), Rule::CborNonShortest);
    assert_eq!(rule_of(&[0x1a, 0, 0, 255, 255]), Rule::CborNonShortest);
    assert_eq!(
        rule_of(&[0x1b, 0, 0, 0, 0, 255, 255, 255, 255]),
        Rule::CborNonShortest
    );
    assert_eq!(rule_of(&[0x78, 1, b'a']), Rule::CborNonShortest);
}

#[test]
fn structural_violations_have_their_own_rules() {
    assert_eq!(rule_of(&[0x9f, 0xff]), Rule::CborIndefinite);
    assert_eq!(rule_of(&[0x5f, 0xff]), Rule::CborIndefinite);
    assert_eq!(rule_of(&[0xc1, 0x00]), Rule::CborTag);
    assert_eq!(rule_of(&[0x00, 0x00]), Rule::CborTrailingBytes);
    assert_eq!(rule_of(&[0x1c]), Rule::CborSyntax);
    assert_eq!(rule_of(&[0xf7]), Rule::CborSyntax); // undefined
    assert_eq!(rule_of(&[0xf8, 0x20]), Rule::CborSyntax);
    assert_eq!(rule_of(&[0x62, 0xff, 0xfe]), Rule::CborSyntax); // bad UTF-8
    assert_eq!(rule_of(&[]), Rule::CborSyntax);
}

#[test]
fn map_keys_must_be_sorted_and_unique() {
    // {"b": 1, "a": 2}
    assert_eq!(
        rule_of(&[0xa2, 0x61, b'b', 1, 0x61, b'a', 2]),
        Rule::CborUnsortedKeys
    );
    // {"a": 1, "a": 2}
    assert_eq!(
        rule_of(&[0xa2, 0x61, b'a', 1, 0x61, b'a', 2]),
        Rule::CborDuplicateKey
    );
    // shorter keys first: {"z": 0, "aa": 0} is canonical
    assert!(decode(&[0xa2, 0x61, b'z', 0, 0x62, b'a', b'a', 0]).is_ok());
    assert_eq!(
        rule_of(&[0xa2, 0x62, b'a', b'a', 0, 0x61, b'z', 0]),
        Rule::CborUnsortedKeys
    );
}

#[test]
fn encoder_sorts_maps_by_encoded_key() {
    let m = Value::Map(vec![
        (Value::text("layout"), Value::Uint(1)),
        (Value::text("parts"), Value::Uint(2)),
        (Value::text("shape"), Value::Uint(3)),
    ]);
    let enc = encode(&m).unwrap();
    let back = decode(&enc).unwrap();
    let keys: Vec<_> = match back {
        Value::Map(e) => e.into_iter().map(|(k, _)| k).collect(),
        _ => unreachable!(),
    };
    assert_eq!(
        keys,
        vec![
            Value::text("parts"),
            Value::text("shape"),
            Value::text("layout")
        ]
    );
    let dup = Value::Map(vec![
        (Value::text("a"), Value::Null),
        (Value::text("a"), Value::Null),
    ]);
    assert!(encode(&dup).is_err());
}

#[test]
fn floats_use_the_shortest_exact_form() {
    assert_eq!(encode(&Value::Float(1.5)).unwrap(), vec![0xf9, 0x3e, 0x00]);
    assert_eq!(
        encode(&Value::Float(f64::NAN)).unwrap(),
        vec![0xf9, 0x7e, 0x00]
    );
    assert_eq!(
        encode(&Value::Float(f64::INFINITY)).unwrap(),
        vec![0xf9, 0x7c, 0x00]
    );
    assert_eq!(encode(&Value::Float(0.1f32 as f64)).unwrap()[0], 0xfa);
    assert_eq!(encode(&Value::Float(0.1)).unwrap()[0], 0xfb);
    for x in [
        0.0,
        -0.0,
        1.5,
        0.1,
        1e300,
        -2.5e-8,
        f64::NEG_INFINITY,
        65504.0,
    ] {
        let back = decode(&encode(&Value::Float(x)).unwrap()).unwrap();
        assert_eq!(back, Value::Float(x));
    }
    assert_eq!(rule_of(&[0xf9, 0x7e, 0x01]), Rule::CborFloat);
    assert_eq!(rule_of(&[0xf9, 0xfe, 0x00]), Rule::CborFloat);
    assert_eq!(rule_of(&[0xfa, 0x3f, 0xc0, 0, 0]), Rule::CborFloat); // 1.5 as f32
    assert_eq!(rule_of(&[0xfa, 0x7f, 0xc0, 0, 0]), Rule::CborFloat); // NaN as f32
    assert_eq!(
        rule_of(&[0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
        Rule::CborFloat
    );
}

#[test]
fn depth_is_bounded_exactly() {
    let nest = |depth: usize| {
        let mut v = vec![0x81u8; depth];
        v.push(0x00);
        v
    };
    assert!(decode(&nest(MAX_DEPTH as usize)).is_ok());
    assert_eq!(rule_of(&nest(MAX_DEPTH as usize + 1)), Rule::CborDepth);
    assert_eq!(rule_of(&nest(100_000)), Rule::CborDepth);
}

#[test]
fn lying_lengths_do_not_allocate() {
    // array of 2^64-1 items in 9 bytes
    let bytes = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(rule_of(&bytes), Rule::CborSyntax);
    let bytes = [0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(rule_of(&bytes), Rule::CborSyntax);
    let bytes = [0x5a, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(rule_of(&bytes), Rule::CborSyntax);
}

#[test]
fn all_value_kinds_round_trip() {
    let v = Value::text_map([
        ("i", Value::Nint(41)),
        ("b", Value::Bytes(vec![1, 2, 3])),
        ("t", Value::text("héllo")),
        (
            "a",
            Value::Array(vec![Value::Bool(true), Value::Null, Value::Float(2.25)]),
        ),
        ("m", Value::text_map([("x", Value::Uint(1))]).unwrap()),
    ])
    .unwrap();
    let enc = encode(&v).unwrap();
    assert_eq!(decode(&enc).unwrap(), v);
    assert_eq!(encode(&decode(&enc).unwrap()).unwrap(), enc);
}
