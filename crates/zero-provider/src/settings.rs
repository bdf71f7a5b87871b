//! Reading providers' settings from `zerocore.toml`: each provider's settings type derives
//! `Deserialize` with `#[serde(default, deny_unknown_fields)]` (its `Default` holds its
//! defaults) and reads sizes and durations with the functions here, so that every section
//! spells them the same way.
//!
//! Sizes are an integer number of bytes or a string with a unit, parsed by the `bytesize`
//! crate: `"64 MiB"`, `"256KiB"`, `"1.5 GiB"`, `"10 MB"`, `"4096"`. `KiB`, `MiB`, `GiB` are
//! powers of 1024; `KB`, `MB`, `GB` powers of 1000. Durations are whole milliseconds (keys end
//! in `_ms`).

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Parses a size written with an optional unit (`"64 MiB"`, `"512KiB"`, `"1000"`), or says
/// what is wrong with it and how to write it.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.parse::<bytesize::ByteSize>() {
        // bytesize saturates instead of failing on overflow.
        Ok(b) if b.0 == u64::MAX && t.parse::<u64>().is_err() => {
            Err(format!("`{s}` is too large (at most {} bytes)", u64::MAX))
        }
        Ok(b) => Ok(b.0),
        Err(_) => {
            let number = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map_or(t, |i| &t[..i]);
            let unit = t[number.len()..].trim();
            if !number.is_empty() && number.parse::<f64>().is_ok() && !unit.is_empty() {
                Err(format!(
                    "`{s}`: unknown size unit `{unit}` (use B, KiB, MiB, GiB, KB, MB or GB)"
                ))
            } else {
                Err(format!(
                    "`{s}` is not a size: write a number of bytes with an optional unit, like \"64 MiB\""
                ))
            }
        }
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size: a number of bytes or a string such as \"64 MiB\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("a size cannot be negative (got {v})")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_size(v).map_err(E::custom)
    }
}

/// `deserialize_with` for a size in bytes (`u64` or `usize`), written as in [`parse_size`].
pub fn size<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = d.deserialize_any(SizeVisitor)?;
    T::try_from(n)
        .map_err(|_| de::Error::custom(format!("{n} bytes is more than this machine can address")))
}

/// `deserialize_with` for a [`Duration`] written as whole milliseconds.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Millis;
    impl Visitor<'_> for Millis {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number of milliseconds")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_millis)
                .map_err(|_| E::custom(format!("a time cannot be negative (got {v} ms)")))
        }
    }
    d.deserialize_u64(Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("256 KiB"), Ok(256 << 10));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size("2 KB"), Ok(2_000));
        assert_eq!(parse_size("7 B"), Ok(7));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10"), Ok(10));
        assert!(parse_size("ten").unwrap_err().contains("not a size"));
        assert!(parse_size("-5 MiB").unwrap_err().contains("not a size"));
        assert!(
            parse_size("5 parsecs")
                .unwrap_err()
                .contains("unknown size unit `parsecs`")
        );
        assert!(
            parse_size("99999999999 EiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
