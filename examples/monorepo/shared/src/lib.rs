//! Code shared by the mono-repo's apps: plain Rust, compiled into each app that uses it.

/// The greeting for `who` (`"World"` when empty).
pub fn greeting(who: &str) -> String {
    let who = who.trim();
    let who = if who.is_empty() { "World" } else { who };
    format!("Hello, {who}!")
}

/// A line that says which app answered.
pub fn signed(app: &str, text: &str) -> String {
    format!("{text} (from {app})\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets() {
        assert_eq!(greeting(" "), "Hello, World!");
        assert_eq!(signed("a", &greeting("zero")), "Hello, zero! (from a)\n");
    }
}
