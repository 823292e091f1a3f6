//! Percent-encoding as S3 uses it in listings (`encoding-type=url`) and copy sources, and as
//! s3fs uses it for its xattr header; also how the upload journal writes keys on one line.

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips() {
        let s = "a b/ü%+{\"}";
        assert_eq!(percent_encode("a b/c", true), "a%20b/c");
        assert_eq!(
            percent_decode(&percent_encode(s, false)).unwrap(),
            s.as_bytes()
        );
        assert_eq!(percent_decode("%zz"), None);
    }
}
