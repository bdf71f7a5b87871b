//! Client calls for operating a node: its metrics (`zero metrics`, `/node/metrics`) and the
//! log and event streams (`zero logs`, `/log/read` on a tenant or `/node/events`).

use std::collections::BTreeMap;
use std::io::BufRead;

use zero_auth::Ipld;

use crate::Client;

impl Client {
    /// The node's metrics in the Prometheus text format (`/node/metrics`: the Admin, or a key
    /// the Admin delegated it to).
    pub fn metrics(&mut self) -> anyhow::Result<String> {
        let resp = self
            .authorized("GET", "/metrics", "/node/metrics", BTreeMap::new())?
            .call()
            .map_err(|e| self.call_err(e))?;
        resp.into_string()
            .map_err(|e| anyhow::anyhow!("reading the metrics failed: {e}"))
    }

    /// Reads `tenant`'s log stream (only `app`'s lines when given; `/log/read`), or with
    /// `tenant` `None` the node's events (`/node/events`). Each line (one JSON object) goes to
    /// `on_line` until the stream ends: at once after the recent lines, or with `follow` when
    /// the node stops or `on_line` returns `false`. Keep-alive blank lines are skipped.
    pub fn stream_logs(
        &mut self,
        tenant: Option<&str>,
        app: Option<&str>,
        follow: bool,
        mut on_line: impl FnMut(serde_json::Value) -> bool,
    ) -> anyhow::Result<()> {
        let query = if follow { "?follow" } else { "" };
        let req = match tenant {
            Some(tenant) => {
                let mut args =
                    BTreeMap::from([("tenant".to_string(), Ipld::String(tenant.into()))]);
                if let Some(app) = app {
                    args.insert("app".into(), Ipld::String(app.into()));
                }
                self.authorized(
                    "GET",
                    &format!("/v1/tenants/{tenant}/logs{query}"),
                    "/log/read",
                    args,
                )?
            }
            None => self.authorized(
                "GET",
                &format!("/v1/node/events{query}"),
                "/node/events",
                BTreeMap::new(),
            )?,
        };
        // A follow lasts as long as the caller wants; the node sends a blank line when idle.
        let resp = req
            .timeout(std::time::Duration::from_secs(10 * 365 * 24 * 3600))
            .call()
            .map_err(|e| self.call_err(e))?;
        let reader = std::io::BufReader::new(resp.into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| anyhow::anyhow!("the log stream broke off: {e}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                anyhow::anyhow!("the node sent a log line that is not JSON ({e}): {line}")
            })?;
            if !on_line(v) {
                break;
            }
        }
        Ok(())
    }
}
