//! The UCAN extractor of the management API: every endpoint that needs a capability takes a
//! [`Ucan<E>`] argument, which verifies the request's invocation from its headers alone
//! (before any body is read) and yields the verified invocation and its chain.
//!
//! The invocation travels as `Authorization: Bearer <base64 DAG-CBOR>`, the delegations it
//! cites in `ucan-proofs: <base64>,<base64>,…` (root first), at most `[admin] max_proofs` of
//! them and `[admin] max_token_bytes` in all. It must name the endpoint's command
//! ([`Endpoint::COMMAND`]) and this node as `aud`; then the chain is validated (signatures,
//! time bounds, the chain back to the Admin, revocations, every link covering the command,
//! every policy on the arguments by the endpoint's rule, [`Endpoint::scope`]) and the
//! invocation is recorded as used (replay); finally the arguments named by
//! [`Endpoint::URL_ARGS`] must equal the request's path parameters of the same name. A new
//! endpoint is one marker type implementing [`Endpoint`], one handler taking `Ucan<Marker>`,
//! and one route line in [`crate::api::router`].

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use http::HeaderMap;
use http::request::Parts;
use zero_auth::{
    Capability, Command, Delegation, InvocationToken, Ipld, ScopedChain, Validator,
    VerifiedInvocation,
};

use crate::api::{Api, auth_refusal, expect_arg};
use crate::apps::{Refusal, now};

/// What an endpoint requires of its invocation.
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// The command the invocation must name.
    const COMMAND: &'static str;
    /// Path parameters that the invocation's arguments of the same name must equal, in the
    /// order they are checked.
    const URL_ARGS: &'static [&'static str] = &[];

    /// Whether the chain's links allow the invocation's command and arguments; by default the
    /// one rule of [`ScopedChain::rule`] (directory coverage on `.path`).
    fn scope(caps: &[Capability], cmd: &Command, args: &Ipld) -> Result<(), zero_auth::Error> {
        ScopedChain::rule(caps, cmd, args)
    }
}

/// A verified invocation of endpoint `E` (see the module documentation).
pub(crate) struct Ucan<E> {
    /// The verified invocation.
    pub inv: VerifiedInvocation,
    /// Its delegation chain, root first (empty when the Admin invokes directly).
    pub chain: Vec<Delegation>,
    _endpoint: PhantomData<E>,
}

impl<E> Ucan<E> {
    /// The one capability checker over this invocation's chain and arguments.
    pub fn checker(&self) -> ScopedChain {
        ScopedChain::of_invocation(&self.inv)
    }
}

/// A request's path parameters, percent-decoded; a parameter that is not UTF-8 once decoded
/// is refused with `InvalidPath`.
pub(crate) async fn path_params(
    parts: &mut Parts,
    api: &Arc<Api>,
) -> Result<HashMap<String, String>, Refusal> {
    Path::<HashMap<String, String>>::from_request_parts(parts, api)
        .await
        .map(|Path(params)| params)
        .map_err(|_| {
            Refusal::new(
                400,
                "InvalidPath",
                "a segment of the request path is not valid UTF-8 once percent-decoded",
            )
        })
}

impl<E: Endpoint> FromRequestParts<Arc<Api>> for Ucan<E> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Refusal> {
        let params = path_params(parts, api).await?;
        let (inv, chain) = api.authorize_with(&parts.headers, E::COMMAND, &E::scope)?;
        for name in E::URL_ARGS {
            let value = params.get(*name).map(String::as_str).unwrap_or_default();
            expect_arg(&inv.args, name, value)?;
        }
        Ok(Ucan {
            inv,
            chain,
            _endpoint: PhantomData,
        })
    }
}

impl Api {
    /// Reads the invocation and its proofs from the request's headers, within the bounds
    /// (`[admin] max_token_bytes` in all, `[admin] max_proofs` proofs), before anything is
    /// verified.
    pub(crate) fn tokens(
        &self,
        headers: &HeaderMap,
    ) -> Result<(InvocationToken, Vec<Delegation>), Refusal> {
        let limits = &self.limits;
        let size: usize = [http::header::AUTHORIZATION.as_str(), "ucan-proofs"]
            .iter()
            .flat_map(|h| headers.get_all(*h).iter())
            .map(|v| v.len())
            .sum();
        if size > limits.max_token_bytes {
            return Err(Refusal::new(
                431,
                "TooLarge",
                format!(
                    "the invocation and its proofs take {size} bytes, more than this node accepts \
                     ({} bytes, [admin] max_token_bytes); send only the delegations the invocation \
                     cites",
                    limits.max_token_bytes
                ),
            ));
        }
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Refusal::new(
                    401,
                    "MissingInvocation",
                    "send a UCAN invocation as `Authorization: Bearer <base64>` (the zero CLI does this for you)",
                )
            })?;
        let mut encoded = Vec::new();
        for v in headers.get_all("ucan-proofs") {
            let v = v.to_str().map_err(|_| {
                Refusal::new(400, "Malformed", "the ucan-proofs header is not ASCII")
            })?;
            encoded.extend(v.split(',').map(str::trim).filter(|p| !p.is_empty()));
        }
        if encoded.len() > limits.max_proofs {
            return Err(Refusal::new(
                400,
                "TooManyProofs",
                format!(
                    "the request carries {} proofs, more than this node accepts ({}, [admin] \
                     max_proofs); send only the delegations the invocation cites, or obtain a \
                     shorter chain",
                    encoded.len(),
                    limits.max_proofs
                ),
            ));
        }
        let invocation = InvocationToken::from_base64(auth.trim())
            .map_err(|e| Refusal::new(401, e.name(), e.to_string()))?;
        let proofs = encoded
            .into_iter()
            .map(|p| {
                Delegation::from_base64(p).map_err(|e| Refusal::new(401, e.name(), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((invocation, proofs))
    }

    /// The checks every management invocation gets before its chain: the endpoint's command,
    /// and an `aud` naming this node.
    pub(crate) fn check_addressed(
        &self,
        invocation: &InvocationToken,
        command: &str,
    ) -> Result<(), Refusal> {
        if invocation.command().as_str() != command {
            return Err(Refusal::new(
                403,
                "InvalidClaim",
                format!(
                    "this endpoint takes the command `{command}`, the invocation is for `{}`",
                    invocation.command()
                ),
            ));
        }
        let node = &self.authority.node_did;
        match invocation.audience() {
            Some(aud) if aud == node => Ok(()),
            Some(aud) => Err(Refusal::new(
                403,
                "InvalidAudience",
                format!(
                    "the invocation is addressed to {aud}, not to this node ({node}); sign it with \
                     `aud` set to this node's DID (GET /v1/node tells it; the zero CLI does this)"
                ),
            )),
            None => Err(Refusal::new(
                403,
                "InvalidAudience",
                format!(
                    "the invocation has no `aud`; management invocations must be addressed to \
                     this node ({node}) so that they cannot be replayed elsewhere (the zero CLI \
                     does this)"
                ),
            )),
        }
    }

    /// Checks the request's invocation for `command`, with `scope` deciding whether the chain's
    /// capabilities allow the invocation's command and arguments. Returns the verified
    /// invocation and its delegation chain (root first). Reads headers only.
    pub(crate) fn authorize_with(
        &self,
        headers: &HeaderMap,
        command: &str,
        scope: &zero_auth::Authorizer,
    ) -> Result<(VerifiedInvocation, Vec<Delegation>), Refusal> {
        let (invocation, proofs) = self.tokens(headers)?;
        self.check_addressed(&invocation, command)?;
        if invocation.proofs().len() > self.limits.max_proofs {
            return Err(Refusal::new(
                400,
                "TooManyProofs",
                format!(
                    "the invocation cites {} proofs, more than this node accepts ({}, [admin] max_proofs)",
                    invocation.proofs().len(),
                    self.limits.max_proofs
                ),
            ));
        }
        let verified = Validator::new(&self.authority.options)
            .with_revocations(&self.authority.revocations)
            .with_replay_cache(&self.authority.replay)
            .validate_invocation_with(&invocation, &proofs, now(), scope)
            .map_err(auth_refusal)?;
        // The Admin itself signed it (not a delegate, whose chain starts at the Admin too).
        let admin = self.authority.options.required_root.as_ref() == Some(&verified.issuer);
        crate::api::vouch::authenticated(admin);
        let chain = verified
            .proofs
            .iter()
            .filter_map(|cid| proofs.iter().find(|d| d.cid() == cid).cloned())
            .collect();
        Ok((verified, chain))
    }
}
