//! Unsigned decimal numbers read without allocating: option values, and the
//! numbers in `/proc` and `/sys` files.

/// Parses an unsigned decimal number; None on anything else or overflow.
pub fn parse_decimal(text: &[u8]) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0usize, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(digit as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_strictly() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"1048576"), Some(1 << 20));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"12k"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b"99999999999999999999999"), None);
    }
}
