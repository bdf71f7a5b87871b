//! UCAN commands: `/`-delimited paths naming an action.

use std::fmt;
use std::str::FromStr;

use crate::did::truncate;
use crate::error::Error;

/// A UCAN command such as `/fs/read`.
///
/// A command starts with `/`, has no empty segment and no trailing `/` (except the top command
/// `/` itself) and contains no uppercase letter. A command covers itself and every command
/// nested under it: `/` covers everything, `/fs` covers `/fs/read` but not `/fsx`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Command(String);

impl Command {
    /// Parses and checks a command.
    ///
    /// ```
    /// use zero_auth::Command;
    /// let fs = Command::parse("/fs")?;
    /// assert!(fs.covers(&Command::parse("/fs/read")?));
    /// assert!(!fs.covers(&Command::parse("/fsx")?));
    /// assert!(Command::parse("fs/read").is_err());
    /// # Ok::<(), zero_auth::Error>(())
    /// ```
    pub fn parse(input: &str) -> Result<Self, Error> {
        let fail = |why: &str| {
            Error::malformed(
                None,
                format!(
                    "command `{}` is invalid: {why} (commands look like `/fs/read`)",
                    truncate(input, 80)
                ),
            )
        };
        let Some(rest) = input.strip_prefix('/') else {
            return Err(fail("it must start with `/`"));
        };
        if rest.is_empty() {
            return Ok(Command::top());
        }
        if rest.split('/').any(str::is_empty) {
            return Err(fail("it has an empty segment or a trailing `/`"));
        }
        if input.chars().any(char::is_uppercase) {
            return Err(fail("commands must be lowercase"));
        }
        if input.chars().any(char::is_control) {
            return Err(fail("it contains a control character"));
        }
        Ok(Command(input.to_owned()))
    }

    /// The top command `/`, which covers every command.
    pub fn top() -> Self {
        Command("/".to_owned())
    }

    /// The command as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this command covers `other`: it is `/`, equal to `other`, or a path prefix of it
    /// at a segment boundary.
    pub fn covers(&self, other: &Command) -> bool {
        self.0 == "/"
            || self.0 == other.0
            || other
                .0
                .strip_prefix(self.0.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({})", self.0)
    }
}

impl FromStr for Command {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Command::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Command {
        Command::parse(s).unwrap()
    }

    #[test]
    fn parse_rules() {
        for ok in ["/", "/fs", "/fs/read", "/a-b/c_d", "/ünïcode"] {
            assert_eq!(c(ok).as_str(), ok);
        }
        for bad in ["", "fs", "/fs/", "//", "/fs//read", "/Fs", "/fs\n"] {
            assert_eq!(
                Command::parse(bad).unwrap_err().name(),
                "Malformed",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn covering() {
        assert!(c("/").covers(&c("/")));
        assert!(c("/").covers(&c("/db/read")));
        assert!(c("/fs").covers(&c("/fs")));
        assert!(c("/fs").covers(&c("/fs/read")));
        assert!(c("/fs").covers(&c("/fs/read/deep")));
        assert!(!c("/fs").covers(&c("/fsx")));
        assert!(!c("/fs/read").covers(&c("/fs")));
        assert!(!c("/fs/read").covers(&c("/fs/write")));
        assert!(!c("/fs").covers(&c("/")));
    }
}
