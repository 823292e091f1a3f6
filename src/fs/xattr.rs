//! Extended attributes in one header, as s3fs keeps them: `x-amz-meta-xattr` holds URL-encoded
//! JSON `{"name":"base64(value)",...}`.

use std::collections::BTreeMap;

use crate::store::percent::{percent_decode, percent_encode};

/// The user-metadata key (without `x-amz-meta-`).
pub const HEADER: &str = "xattr";

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Reads the header; a value that does not parse counts as no attributes.
pub fn decode(header: Option<&String>) -> BTreeMap<String, Vec<u8>> {
    let Some(raw) = header else {
        return BTreeMap::new();
    };
    let json = percent_decode(raw).and_then(|b| String::from_utf8(b).ok());
    let map: Option<BTreeMap<String, String>> = json.and_then(|j| serde_json::from_str(&j).ok());
    map.unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, base64_decode(&v)?)))
        .collect()
}

/// The header value, or `None` when there are no attributes left.
pub fn encode(attrs: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    let map: BTreeMap<&String, String> = attrs.iter().map(|(k, v)| (k, base64_encode(v))).collect();
    Some(percent_encode(
        &serde_json::to_string(&map).expect("strings serialise"),
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn header_round_trips() {
        let mut m = BTreeMap::new();
        m.insert("user.color".to_string(), b"blue \x00 bin".to_vec());
        let h = encode(&m).unwrap();
        assert!(h.starts_with("%7B%22user.color%22"), "{h}");
        assert_eq!(decode(Some(&h)), m);
        assert!(decode(Some(&"garbage".to_string())).is_empty());
        assert_eq!(encode(&BTreeMap::new()), None);
    }
}
