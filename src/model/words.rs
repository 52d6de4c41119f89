//! Numbers and counted nouns as people read them: `1,234,567`, `1 error`, `2 errors`.
//!
//! Receives: counts. Sends on: text for summaries, tables and messages. Invariant: every count
//! a person reads goes through here, so separators and plurals are the same everywhere.

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` and the noun, singular for 1: `count(1, "error")` is `1 error`, `count(2_000, "error")`
/// is `2,000 errors`. Nouns whose plural is not `+s` use [`count_as`].
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

/// `count` with an explicit plural (`count_as(n, "key range", "key ranges")`, `"copy", "copies"`).
pub fn count_as(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{} {many}", thousands(n))
    }
}

/// A byte count for people, in binary units: `512 B`, `1.2 KiB`, `3.4 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn plurals() {
        assert_eq!(count(0, "error"), "0 errors");
        assert_eq!(count(1, "error"), "1 error");
        assert_eq!(count(1234, "LIST request"), "1,234 LIST requests");
        assert_eq!(count_as(1, "copy", "copies"), "1 copy");
        assert_eq!(count_as(3, "copy", "copies"), "3 copies");
    }

    #[test]
    fn binary_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1_258_291), "1.2 MiB");
        assert_eq!(bytes(50 * 1024 * 1024 * 1024), "50 GiB");
        assert_eq!(bytes(u64::MAX), "16 EiB");
    }
}
