use super::*;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, Path::new("/p/app/zero.toml"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const FULL: &str = r#"
[app]
name = "notes"
routes = ["/notes", "notes.example/api"]
outbound = ["api.example.com", "*.cdn.example:443"]

[build]
watch = ["src", "Cargo.toml"]

[[schedule]]
name = "tick"
cron = "*/5 * * * * *"
tz = "Europe/Paris"
retries = 2

[[schedule]]
name = "sync"
every = "30s"
catch_up = "last"

[capabilities.files]
read = ["/site/"]
write = ["/uploads"]

[capabilities.databases.notes]
write = ["notes", "tags"]
read = ["*"]

[capabilities.cache]
write = ["note:"]
read = [""]

[[seed]]
from = "site"
to = "/site"
"#;

#[test]
fn a_full_manifest_turns_into_exact_grants() {
    let m = parse(FULL).unwrap();
    assert_eq!(m.name.as_deref(), Some("notes"));
    assert_eq!(m.routes, ["/notes", "notes.example/api"]);
    assert_eq!(m.outbound, ["api.example.com", "*.cdn.example:443"]);
    assert_eq!(
        m.schedule_args(),
        [
            "tick=*/5 * * * * *;tz=Europe/Paris;retries=2",
            "sync=every 30s;catch_up=last"
        ]
    );
    // Every argument form parses back with the parser the node applies to deploys.
    for a in m.schedule_args() {
        assert_eq!(zerochrono::ScheduleDecl::parse_arg(&a).unwrap().to_arg(), a);
    }
    let got: Vec<(String, String)> = m
        .capabilities
        .iter()
        .map(|c| (c.command().to_string(), c.policy_json().to_string()))
        .collect();
    let want: Vec<(&str, &str)> = vec![
        ("/fs/read", r#"[["==",".path","/site"]]"#),
        ("/fs", r#"[["==",".path","/uploads"]]"#),
        ("/db/read", r#"[["==",".db","notes"]]"#),
        ("/db", r#"[["==",".db","notes"],["==",".table","notes"]]"#),
        ("/db", r#"[["==",".db","notes"],["==",".table","tags"]]"#),
        ("/cache/read", "[]"),
        ("/cache", r#"[["like",".key","note:*"]]"#),
    ];
    let got_ref: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(got_ref, want);
    let grants = m.grants().unwrap();
    assert_eq!(grants.len(), 7);
    assert!(grants.iter().all(|g| g.expires_in.is_none()));
    assert_eq!(
        m.watch,
        [
            PathBuf::from("/p/app/src"),
            PathBuf::from("/p/app/Cargo.toml")
        ]
    );
    assert_eq!(m.seeds[0].from, PathBuf::from("/p/app/site"));
    assert_eq!(m.seeds[0].to, "/site");
    assert_eq!(m.seeds[0].line, 34);
}

#[test]
fn cache_prefixes_are_escaped_for_like() {
    assert_eq!(escape_like(r"a*b\c"), r"a\*b\\c");
    let m = parse("[app]\nroutes=[\"/x\"]\n[capabilities.cache]\nwrite = [\"k*\"]\n").unwrap();
    assert_eq!(
        m.capabilities[0].policy_json().to_string(),
        r#"[["like",".key","k\\**"]]"#
    );
    // The policy really matches the prefix and nothing else.
    let g = m.grants().unwrap();
    let policy = &g[0].policy;
    let args = |k: &str| {
        zero_auth::Ipld::Map(BTreeMap::from([(
            "key".to_string(),
            zero_auth::Ipld::String(k.into()),
        )]))
    };
    assert!(policy.matches(&args("k*1")));
    assert!(!policy.matches(&args("kx")));
}

#[test]
fn errors_name_file_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "[app]\nroutes = [\"/x\"]\n\n[capabilities.files]\nread = [\"site\"]\n",
            "/p/app/zero.toml:5: [capabilities.files] read: `site` is not an absolute path",
        ),
        (
            "[app]\nroutes = [\"/x\"]\n[capabilities.files]\nrea = [\"/site\"]\n",
            "/p/app/zero.toml:4: unknown field `rea`, expected `read` or `write`",
        ),
        (
            "[app]\nroutes = [\"api\"]\n",
            "/p/app/zero.toml:2: [app] routes: ",
        ),
        (
            "[app]\nroutes = [\"/x\"]\noutbound = [\"\"]\n",
            "/p/app/zero.toml:3: [app] outbound: `` is not a host pattern",
        ),
        (
            "[app]\nname = \"Bad Name\"\nroutes = [\"/x\"]\n",
            "/p/app/zero.toml:2: [app] name: `Bad Name` is not a valid app name",
        ),
        (
            "[[schedule]]\nname = \"t\"\ncron = \"not cron\"\n",
            "/p/app/zero.toml:3: [[schedule]] cron: ",
        ),
        (
            "[[schedule]]\nname = \"t\"\nevery = \"5 parsecs\"\n",
            "/p/app/zero.toml:3: [[schedule]] every: ",
        ),
        (
            "[[schedule]]\nname = \"t\"\ncron = \"* * * * * *\"\ntz = \"Mars/Olympus\"\n",
            "/p/app/zero.toml:4: [[schedule]] tz: ",
        ),
        (
            "[[schedule]]\nname = \"t\"\n",
            "/p/app/zero.toml:2: [[schedule]]: schedule `t` needs `cron",
        ),
        (
            "[app]\nroutes = [\"/x\"]\n[capabilities.databases.notes]\nwrite = [\"a b\"]\n",
            "/p/app/zero.toml:4: [capabilities.databases.notes] write: `a b` is not a table name",
        ),
        (
            "[app]\nroutes = [\"/x\"]\n[build]\ncommand = \"make\"\n",
            "/p/app/zero.toml:4: [build] command: a custom build command needs `output",
        ),
        (
            "[app]\nroutes = [\"/x\"]\n[[seed]]\nfrom = \"site\"\nto = \"/.zero/code\"\n",
            "/p/app/zero.toml:5: [[seed]] to: `/.zero/code` cannot be seeded",
        ),
        (
            "[app]\nroutes = \"/x\"\n",
            "/p/app/zero.toml:2: invalid type: string \"/x\", expected a sequence",
        ),
        (
            "[app]\n",
            "/p/app/zero.toml: [app] routes: the app has no route and no schedule",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(
            got.starts_with(want),
            "for\n{text}\ngot:  {got}\nwant: {want}…"
        );
    }
}

#[test]
fn the_app_name_defaults_to_the_package_name() {
    let m = parse("[app]\nroutes = [\"/\"]\n").unwrap();
    assert_eq!(m.app_name(Some("my_app")).unwrap(), "my-app");
    let e = m.app_name(Some("über")).unwrap_err().to_string();
    assert!(e.contains("set [app] name"), "{e}");
    let e = m.app_name(None).unwrap_err().to_string();
    assert!(e.contains("[app] name"), "{e}");
    assert!(m.capabilities.is_empty());
}

#[test]
fn the_committed_schema_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/zero.schema.json");
    let want = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
    if std::env::var_os("ZERO_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "schema/zero.schema.json is out of date: run ZERO_UPDATE_SCHEMA=1 cargo test -p zero-manifest"
    );
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert!(v["properties"]["capabilities"].is_object(), "{v}");
}

/// Found by the `manifest` fuzz target (`fuzz/seeds/manifest/bare-carriage-return`): the `toml`
/// crate refuses a bare carriage return with an empty message, so the refusal said nothing.
#[test]
fn a_bare_carriage_return_is_refused_with_a_message() {
    for text in ["\r", "[app]\rname = \"x\"\n", "[app]\nname = \"x\"\r"] {
        let e = parse(text).unwrap_err();
        assert!(e.message.contains("carriage return"), "{text:?}: {e}");
        assert!(e.line.is_some(), "{text:?}: {e}");
    }
}
