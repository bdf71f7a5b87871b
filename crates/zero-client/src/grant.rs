//! Granting capabilities: policies from JSON, delegations from the Admin to an owner and down a
//! chain, and signing a component with the chain that authorizes it.

use zero_auth::policy::Statement;
use zero_auth::{Command, Delegation, Did, Ipld, Keypair, Policy};

use crate::now;

/// Converts JSON (as written on a command line) to IPLD: integers stay integers.
pub fn json_to_ipld(v: &serde_json::Value) -> Ipld {
    match v {
        serde_json::Value::Null => Ipld::Null,
        serde_json::Value::Bool(b) => Ipld::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Ipld::Integer(i.into()),
            None => match n.as_u64() {
                Some(u) => Ipld::Integer(u.into()),
                None => Ipld::Float(n.as_f64().unwrap_or(0.0)),
            },
        },
        serde_json::Value::String(s) => Ipld::String(s.clone()),
        serde_json::Value::Array(a) => Ipld::List(a.iter().map(json_to_ipld).collect()),
        serde_json::Value::Object(o) => Ipld::Map(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_ipld(v)))
                .collect(),
        ),
    }
}

/// Parses a policy given as JSON, e.g. `[["==", ".tenant", "acme"]]`.
pub fn parse_policy(json: &str) -> anyhow::Result<Policy> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        anyhow::anyhow!(
            "the policy is not JSON ({e}); write it like [[\"==\", \".path\", \"/data\"]]"
        )
    })?;
    Policy::from_ipld(&json_to_ipld(&v)).map_err(|e| anyhow::anyhow!("invalid policy: {e}"))
}

fn with_statement(policy: Policy, extra: Statement) -> Policy {
    let mut statements = policy.statements().to_vec();
    statements.push(extra);
    Policy::new(statements)
}

/// What a new delegation grants.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Command (`/` for everything).
    pub command: String,
    /// Policy on the arguments.
    pub policy: Policy,
    /// Seconds until it expires (`None`: never).
    pub expires_in: Option<u64>,
}

/// The Admin's delegation to a tenant's owner: everything (`/`) within the tenant.
pub fn owner_delegation(
    admin: &Keypair,
    tenant: &str,
    owner: &Did,
    expires_in: Option<u64>,
) -> anyhow::Result<Delegation> {
    Delegation::builder(owner.clone(), Command::top(), expires_in.map(|s| now() + s))
        .subject(admin.did().clone())
        .policy(Policy::new(vec![zero_auth::component::tenant_statement(
            tenant,
        )]))
        .sign(admin)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Extends `chain` (whose holder must be `issuer`) with a delegation to `audience`.
pub fn extend_chain(
    issuer: &Keypair,
    chain: &[Delegation],
    audience: &Did,
    grant: &Grant,
) -> anyhow::Result<Vec<Delegation>> {
    let leaf = chain
        .last()
        .ok_or_else(|| anyhow::anyhow!("the proof chain is empty"))?;
    if leaf.audience() != issuer.did() {
        anyhow::bail!(
            "the proof chain is held by {}, not by this key ({}); use the key the chain was delegated to",
            leaf.audience(),
            issuer.did()
        );
    }
    let subject = chain
        .first()
        .and_then(|d| d.subject().cloned())
        .ok_or_else(|| anyhow::anyhow!("the chain's root delegation has no subject"))?;
    let command = Command::parse(&grant.command).map_err(|e| anyhow::anyhow!("{e}"))?;
    let d = Delegation::builder(
        audience.clone(),
        command,
        grant.expires_in.map(|s| now() + s),
    )
    .subject(subject)
    .policy(grant.policy.clone())
    .sign(issuer)
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = chain.to_vec();
    out.push(d);
    Ok(out)
}

/// Parses one capability as written on a command line: a command, optionally followed by a
/// policy in JSON, e.g. `/fs/read [["==", ".path", "/site"]]` or `/db` (no policy: the
/// command's whole scope within the chain).
pub fn parse_capability(spec: &str, expires_in: Option<u64>) -> anyhow::Result<Grant> {
    let spec = spec.trim();
    let (command, policy) = match spec.find(char::is_whitespace) {
        Some(i) => (&spec[..i], spec[i..].trim()),
        None => (spec, "[]"),
    };
    let example = r#"write it as a command and an optional JSON policy, e.g. '/fs/read [["==", ".path", "/site"]]' or '/db'"#;
    if command.is_empty() {
        anyhow::bail!("the capability is empty; {example}");
    }
    Command::parse(command).map_err(|e| {
        anyhow::anyhow!("capability `{spec}`: `{command}` is not a command ({e}); {example}")
    })?;
    let policy =
        parse_policy(policy).map_err(|e| anyhow::anyhow!("capability `{spec}`: {e}; {example}"))?;
    Ok(Grant {
        command: command.to_owned(),
        policy,
        expires_in,
    })
}

/// Signs a component with one capability: [`sign_component_grants`] with one grant.
pub fn sign_component(
    bytes: &[u8],
    key: &Keypair,
    chain: &[Delegation],
    grant: &Grant,
) -> anyhow::Result<Vec<u8>> {
    sign_component_grants(bytes, key, chain, std::slice::from_ref(grant))
}

/// Signs a component with exactly the capabilities `grants`: for each grant, a delegation
/// bound to the component's content hash (`.component`) extends `chain` (held by `key`), and
/// the chains are embedded in the `ucan` custom section (replacing any previous one; one grant
/// gives the one-chain form every node reads). The node allows a host call when one of them
/// allows it. Refuses no grant, more than [`zero_auth::component::MAX_CHAINS`], and a grant
/// given twice.
pub fn sign_component_grants(
    bytes: &[u8],
    key: &Keypair,
    chain: &[Delegation],
    grants: &[Grant],
) -> anyhow::Result<Vec<u8>> {
    let max = zero_auth::component::MAX_CHAINS;
    if grants.is_empty() {
        anyhow::bail!(
            "no capability to sign the component with; name at least one (e.g. `--cap /fs/read`)"
        );
    }
    if grants.len() > max {
        anyhow::bail!(
            "{} capabilities, more than the {max} a component may carry; merge those with the \
             same command into one policy with `or`",
            grants.len()
        );
    }
    for (i, g) in grants.iter().enumerate() {
        if let Some(j) = grants[..i]
            .iter()
            .position(|o| o.command == g.command && o.policy == g.policy)
        {
            anyhow::bail!(
                "capability {} (`{}` {}) repeats capability {}; give each capability once",
                i + 1,
                g.command,
                g.policy,
                j + 1
            );
        }
    }
    zero_component::expect_component(bytes, "the input")?;
    let unsigned = zero_component::strip_custom_section(bytes, zero_component::UCAN_SECTION)?;
    let hash = zero_component::content_hash(&unsigned)?.to_string();
    let chains = grants
        .iter()
        .map(|grant| {
            let bound = Grant {
                policy: with_statement(
                    grant.policy.clone(),
                    zero_auth::component::binding_statement(&hash),
                ),
                ..grant.clone()
            };
            extend_chain(key, chain, key.did(), &bound)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let section =
        zero_auth::component::encode_chains(&chains).map_err(|e| anyhow::anyhow!("{e}"))?;
    if section.len() > zero_auth::component::MAX_SECTION_SIZE {
        anyhow::bail!(
            "the {} capabilities take {} bytes, more than the {} bytes a component's token may \
             take; use fewer capabilities or a shorter chain",
            grants.len(),
            section.len(),
            zero_auth::component::MAX_SECTION_SIZE
        );
    }
    Ok(zero_component::append_custom_section(
        &unsigned,
        zero_component::UCAN_SECTION,
        &section,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extending_requires_the_holders_key() {
        let admin = Keypair::generate().unwrap();
        let owner = Keypair::generate().unwrap();
        let other = Keypair::generate().unwrap();
        let d = owner_delegation(&admin, "acme", owner.did(), None).unwrap();
        let grant = Grant {
            command: "/fs/read".into(),
            policy: parse_policy(r#"[["==", ".path", "/site"]]"#).unwrap(),
            expires_in: Some(60),
        };
        let chain = extend_chain(&owner, std::slice::from_ref(&d), other.did(), &grant).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].subject(), Some(admin.did()));
        let err = extend_chain(&other, std::slice::from_ref(&d), owner.did(), &grant).unwrap_err();
        assert!(err.to_string().contains("held by"), "{err}");
    }

    #[test]
    fn capabilities_parse_from_the_command_line_with_clear_errors() {
        let g = parse_capability(r#"/fs/read [["==", ".path", "/site"]]"#, Some(5)).unwrap();
        assert_eq!(g.command, "/fs/read");
        assert_eq!(
            g.policy,
            parse_policy(r#"[["==", ".path", "/site"]]"#).unwrap()
        );
        assert_eq!(g.expires_in, Some(5));
        let g = parse_capability("  /db  ", None).unwrap();
        assert_eq!(
            (g.command.as_str(), g.policy.statements().len()),
            ("/db", 0)
        );
        for (bad, why) in [
            ("", "empty"),
            ("fs/read", "not a command"),
            ("/fs/read [[", "not JSON"),
            (r#"/fs/read [["~~", ".path", 1]]"#, "invalid policy"),
        ] {
            let e = parse_capability(bad, None).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("e.g. '/fs/read"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn policies_parse_from_json_with_clear_errors() {
        assert!(parse_policy("[]").is_ok());
        assert!(parse_policy("[[\"==\", \".n\", 1]]").is_ok());
        assert!(
            parse_policy("not json")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
        assert!(parse_policy("[[\"~~\", \".n\", 1]]").is_err());
    }
}
