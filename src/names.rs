//! Names, labels, tags and tokens derived from user input, fitted to their limits. Kubernetes
//! allows object names of 253 characters and namespaces of 63, so anything built from them
//! may be too long for where it goes; such values are shortened with a stable hash.

use sha2::{Digest, Sha256};

/// Kubernetes label values.
pub const LABEL_VALUE_MAX: usize = 63;
/// Kubernetes object names (DNS subdomains).
pub const NAME_MAX: usize = 253;
/// EC2 tag values.
pub const TAG_VALUE_MAX: usize = 256;
/// EC2 security group names and descriptions.
pub const GROUP_NAME_MAX: usize = 255;
/// EC2 ClientToken.
pub const CLIENT_TOKEN_MAX: usize = 64;

/// `s` if it is at most `max` bytes long; else a prefix of it, `-` and 10 hex digits of the
/// SHA-256 of all of `s`: stable, still distinct for distinct inputs (but for a 40-bit
/// collision), and valid wherever `s` was (it ends in a letter or digit, and the prefix never
/// ends in `.` or `-`, so DNS names and label values stay valid).
pub fn fit(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let digest: String = Sha256::digest(s.as_bytes())
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut end = max.saturating_sub(digest.len() + 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = s[..end].trim_end_matches(['.', '-', '_', ' ']);
    if prefix.is_empty() {
        digest
    } else {
        format!("{prefix}-{digest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A valid Kubernetes object name (DNS subdomain) of length `len`.
    fn dns_subdomain(rng: &mut impl Rng, len: usize) -> String {
        const INNER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-.";
        const EDGE: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut s = String::new();
        while s.len() < len {
            let at_edge = s.is_empty() || s.len() + 1 == len || s.ends_with(['.', '-']);
            let set = if at_edge || s.ends_with('.') {
                EDGE
            } else {
                INNER
            };
            let c = set[rng.random_range(0..set.len())] as char;
            // No ".-" or "-." and no "..": each dot-separated part starts and ends alnum.
            if (c == '-' && s.ends_with('.')) || (c == '.' && s.ends_with('-')) {
                continue;
            }
            s.push(c);
        }
        s
    }

    pub fn is_dns_subdomain(s: &str) -> bool {
        s.len() <= NAME_MAX
            && !s.is_empty()
            && s.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    }

    pub fn is_label_value(s: &str) -> bool {
        s.len() <= LABEL_VALUE_MAX
            && (s.is_empty()
                || (s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && s.as_bytes()[0].is_ascii_alphanumeric()
                    && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
    }

    #[test]
    fn short_values_are_kept_and_long_ones_fit_stably() {
        assert_eq!(fit("abc", 63), "abc");
        let long = "a".repeat(253);
        let f = fit(&long, 63);
        assert_eq!(f.len(), 63);
        assert_eq!(f, fit(&long, 63), "stable");
        assert_ne!(f, fit(&format!("{}b", "a".repeat(252)), 63), "distinct");
        assert!(is_label_value(&f));
    }

    /// Property: for generated valid names of every length, a fitted value is within its
    /// limit, valid where the input was, and distinct inputs stay distinct.
    #[test]
    fn generated_names_fit_every_limit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let mut seen = std::collections::HashMap::new();
        for i in 0..3000 {
            let len = if i < 253 {
                i + 1
            } else {
                rng.random_range(1..=NAME_MAX)
            };
            let name = dns_subdomain(&mut rng, len);
            assert!(is_dns_subdomain(&name), "generator: {name}");
            for max in [
                LABEL_VALUE_MAX,
                NAME_MAX,
                TAG_VALUE_MAX,
                GROUP_NAME_MAX,
                CLIENT_TOKEN_MAX,
            ] {
                let f = fit(&name, max);
                assert!(f.len() <= max, "{name} -> {f} over {max}");
                assert!(is_dns_subdomain(&f), "{name} -> {f} is not a DNS name");
                if max == LABEL_VALUE_MAX {
                    assert!(is_label_value(&f), "{name} -> {f} is not a label value");
                }
            }
            let short = fit(&name, LABEL_VALUE_MAX);
            if let Some(other) = seen.insert(short.clone(), name.clone()) {
                assert_eq!(other, name, "{other} and {name} both fit to {short}");
            }
        }
    }
}
