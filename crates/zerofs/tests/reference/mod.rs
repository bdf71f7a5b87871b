//! A reference path normalizer written from `TenantPath`'s documented rules (shared by the
//! property test `tests/paths.rs` and the fuzz target `fuzz/fuzz_targets/tenant_path.rs`).

/// `None` when the path must be refused (not absolute, a NUL byte, an empty segment, a
/// segment over 255 bytes, over 4096 bytes, or a `..` above the root), else its normal form
/// (`.` and `..` resolved).
pub fn normalize(s: &str) -> Option<String> {
    if s.len() > 4096 || s.contains('\0') || !s.starts_with('/') {
        return None;
    }
    let mut stack: Vec<&str> = Vec::new();
    let rest = &s[1..];
    if !rest.is_empty() {
        for seg in rest.split('/') {
            match seg {
                "" => return None,
                "." => {}
                ".." => {
                    stack.pop()?;
                }
                _ if seg.len() > 255 => return None,
                _ => stack.push(seg),
            }
        }
    }
    Some(format!("/{}", stack.join("/")))
}
