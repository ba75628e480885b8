//! Authorization: which principal may do what to which model. The policy is data (a
//! TOML file in `policies/`), default deny: a call is allowed only when some rule both
//! matches the caller and grants the operation on the model and version.
//!
//! Within a rule every principal matcher that is given must match (each list matches
//! when any of its entries does); a rule with no principal matcher is refused unless it
//! says `any_authenticated = true`, so "everyone" is never an accident.
//!
//! Token claims mean something only together with their issuer: `sub = "admin"` from
//! one issuer is not `sub = "admin"` from another. So a rule on `subjects`, `scopes` or
//! `groups` is bound to issuers: those it lists in `issuers`, or, when it lists none,
//! the only configured issuer; with several issuers configured such a rule must say
//! which (`issuers = ["*"]` explicitly means any, and `warden check` warns about it).
//! Rate overrides are bound the same way.

use crate::auth::Principal;
use serde::Deserialize;
use std::path::Path;

/// What a call does to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Infer,
    Metadata,
    Ready,
    /// Triton's model configuration (`/v2/models/{m}/config`, `ModelConfig`).
    Config,
    /// Triton's statistics (`/v2/models/{m}/stats`, `ModelStatistics`); without a
    /// model named, the answer lists only the models this operation is granted on.
    Stats,
    /// The server's administration: Triton's repository index, load and unload, log
    /// settings. Load and unload are granted per model; the index and the log settings
    /// concern the whole server and need a rule whose `models` include `*`.
    Admin,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Infer => "infer",
            Operation::Metadata => "metadata",
            Operation::Ready => "ready",
            Operation::Config => "config",
            Operation::Stats => "stats",
            Operation::Admin => "admin",
        }
    }
}

/// The model name a server-wide operation (Triton's repository index, log settings)
/// is authorized on: only a rule whose `models` include `*` grants it.
pub const SERVER_WIDE: &str = "*";

/// One rule of the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for logs and `warden check`.
    pub name: String,
    /// Token `sub` globs.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Token `iss` values (exact); `*` means any issuer.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Scopes, any of which the token must carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Groups, any of which the token must carry.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Client certificate identity globs (URI SAN, DNS SAN or CN).
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Explicitly match every authenticated caller.
    #[serde(default)]
    pub any_authenticated: bool,
    /// Model name globs.
    pub models: Vec<String>,
    /// Versions; empty: every version, and calls that name no version.
    #[serde(default)]
    pub versions: Vec<u64>,
    /// Operations granted.
    pub operations: Vec<Operation>,
}

/// A per-principal rate override.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOverride {
    /// Token `sub` (or certificate identity) glob.
    pub subject: String,
    /// Token `iss` values the override applies to (`*`: any); empty: the only
    /// configured issuer (required when there are several).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Requests per second for matching principals.
    pub rps: u32,
}

fn issuer_matches(list: &[String], issuer: &str) -> bool {
    list.is_empty() || list.iter().any(|i| i == "*" || i == issuer)
}

/// The whole policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    #[serde(default, rename = "rate")]
    pub rates: Vec<RateOverride>,
    /// Set when no policy file is configured: every authenticated caller may do
    /// everything (logged loudly at start).
    #[serde(skip)]
    pub open: bool,
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl Rule {
    fn matches_principal(&self, p: &Principal) -> bool {
        let any = |list: &[String], f: &dyn Fn(&str) -> bool| {
            list.is_empty() || list.iter().any(|x| f(x))
        };
        let token_based = p.method != crate::auth::Method::Mtls;
        any(&self.subjects, &|g| token_based && glob(g, &p.subject))
            && (self.issuers.is_empty() || token_based && issuer_matches(&self.issuers, &p.issuer))
            && any(&self.scopes, &|s| p.scopes.iter().any(|x| x == s))
            && any(&self.groups, &|g| p.groups.iter().any(|x| x == g))
            && any(&self.certificates, &|g| {
                p.certificate.as_deref().is_some_and(|c| glob(g, c))
            })
    }

    /// Whether the rule matches on token claims (which mean something per issuer).
    fn uses_claims(&self) -> bool {
        !(self.subjects.is_empty() && self.scopes.is_empty() && self.groups.is_empty())
    }

    fn has_principal_matcher(&self) -> bool {
        !(self.subjects.is_empty()
            && self.issuers.is_empty()
            && self.scopes.is_empty()
            && self.groups.is_empty()
            && self.certificates.is_empty())
    }

    fn grants(&self, model: &str, version: Option<u64>, op: Operation) -> bool {
        self.operations.contains(&op)
            && self.models.iter().any(|g| glob(g, model))
            && (self.versions.is_empty() || version.is_some_and(|v| self.versions.contains(&v)))
    }
}

impl Policy {
    /// Parses and checks a policy file.
    pub fn from_file(path: &Path) -> anyhow::Result<Policy> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", path.display()))?;
        Policy::from_toml(&text).map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Policy> {
        let policy: Policy = toml::from_str(text)?;
        for r in &policy.rules {
            if r.has_principal_matcher() == r.any_authenticated {
                anyhow::bail!(
                    "rule {:?}: give principal matchers (subjects, issuers, scopes, groups, certificates) or any_authenticated = true, not both or neither",
                    r.name
                );
            }
            if r.models.is_empty() || r.operations.is_empty() {
                anyhow::bail!("rule {:?}: models and operations must not be empty", r.name);
            }
        }
        Ok(policy)
    }

    /// Binds the rules and rate overrides that name no issuer to the configured ones
    /// (see the module docs); an error names a rule that would match across issuers
    /// without saying so.
    pub fn bind_issuers(&mut self, configured: &[String]) -> anyhow::Result<()> {
        let bind = |what: &str, name: &str, list: &mut Vec<String>| -> anyhow::Result<()> {
            if !list.is_empty() {
                return Ok(());
            }
            match configured {
                [] => Ok(()),
                [only] => {
                    list.push(only.clone());
                    Ok(())
                }
                _ => anyhow::bail!(
                    "{what} {name:?} matches token claims but names no issuers while {} issuers are configured: a token of one issuer could match what another issuer's claims mean; set issuers = [\"<iss>\", ...] (or [\"*\"] for any issuer)",
                    configured.len()
                ),
            }
        };
        for r in &mut self.rules {
            if r.uses_claims() {
                bind("rule", &r.name, &mut r.issuers)?;
            }
        }
        for r in &mut self.rates {
            bind("rate override for subject", &r.subject, &mut r.issuers)?;
        }
        Ok(())
    }

    /// Rules that match token claims across issuers, for `warden check`.
    pub fn cross_issuer_warnings(&self, configured: &[String]) -> Vec<String> {
        if configured.len() < 2 {
            return Vec::new();
        }
        let mut out: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.uses_claims() && r.issuers.iter().any(|i| i == "*"))
            .map(|r| format!(
                "rule {:?} matches subjects/scopes/groups of ANY issuer (issuers = [\"*\"]): each of the {} issuers can mint claims it grants",
                r.name,
                configured.len()
            ))
            .collect();
        out.extend(
            self.rates
                .iter()
                .filter(|r| r.issuers.iter().any(|i| i == "*"))
                .map(|r| {
                    format!(
                        "rate override for subject {:?} applies to ANY issuer",
                        r.subject
                    )
                }),
        );
        out
    }

    /// The policy used when none is configured.
    pub fn open() -> Policy {
        Policy {
            open: true,
            ..Policy::default()
        }
    }

    /// The name of the rule that allows the call, or `None` (denied).
    pub fn allows(
        &self,
        p: &Principal,
        model: &str,
        version: Option<u64>,
        op: Operation,
    ) -> Option<&str> {
        if self.open {
            return Some("no policy configured");
        }
        self.rules
            .iter()
            .find(|r| r.matches_principal(p) && r.grants(model, version, op))
            .map(|r| r.name.as_str())
    }

    /// The rate override for a principal, if any.
    pub fn rate_override(&self, p: &Principal) -> Option<u32> {
        self.rates
            .iter()
            .find(|r| glob(&r.subject, &p.subject) && issuer_matches(&r.issuers, &p.issuer))
            .map(|r| r.rps)
    }

    /// One line per rule for `warden check`.
    pub fn describe(&self) -> Vec<String> {
        if self.open {
            return vec![
                "NONE CONFIGURED: every authenticated caller may use every model (set auth.policy)"
                    .into(),
            ];
        }
        let mut out: Vec<String> = self
            .rules
            .iter()
            .map(|r| {
                let mut who = Vec::new();
                if r.any_authenticated {
                    who.push("any authenticated caller".to_string());
                }
                for (label, list) in [
                    ("sub", &r.subjects),
                    ("iss", &r.issuers),
                    ("scope", &r.scopes),
                    ("group", &r.groups),
                    ("cert", &r.certificates),
                ] {
                    if !list.is_empty() {
                        who.push(format!("{label} in {list:?}"));
                    }
                }
                let ops: Vec<&str> = r.operations.iter().map(|o| o.as_str()).collect();
                let versions = if r.versions.is_empty() {
                    "all versions".to_string()
                } else {
                    format!("versions {:?}", r.versions)
                };
                format!(
                    "rule {:?}: {} may {} on models {:?} ({versions})",
                    r.name,
                    who.join(" and "),
                    ops.join(", "),
                    r.models
                )
            })
            .collect();
        out.push("anything else: denied".into());
        for r in &self.rates {
            out.push(format!(
                "rate override: sub {:?} at {} requests/s",
                r.subject, r.rps
            ));
        }
        out
    }
}

/// The policy named by the configuration, or the open one (loudly), its rules bound to
/// the configured issuers.
pub fn load_policy(config: &warden_shared::config::Config) -> anyhow::Result<Policy> {
    match &config.auth.policy {
        Some(path) => {
            let mut policy = Policy::from_file(path)?;
            policy
                .bind_issuers(&issuer_names(config))
                .map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?;
            Ok(policy)
        }
        None => Ok(Policy::open()),
    }
}

/// The `iss` of every configured token issuer.
pub fn issuer_names(config: &warden_shared::config::Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .auth
        .all_issuers()
        .into_iter()
        .map(|i| i.issuer)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Method;

    fn principal(
        sub: &str,
        scopes: &[&str],
        groups: &[&str],
        cert: Option<&str>,
        method: Method,
    ) -> Principal {
        Principal {
            method,
            subject: sub.into(),
            issuer: "https://iss".into(),
            key_id: None,
            jti_hash: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            certificate: cert.map(str::to_owned),
        }
    }

    #[test]
    fn globs() {
        assert!(glob("res*", "resnet"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b", "aXXc"));
        assert!(!glob("nsfw", "nsfw2"));
        assert!(glob("spiffe://d/*", "spiffe://d/x/y"));
    }

    const POLICY: &str = r#"
        [[rule]]
        name = "alice infers on res*"
        subjects = ["alice"]
        models = ["res*"]
        operations = ["infer"]

        [[rule]]
        name = "ml group metadata v2"
        groups = ["ml"]
        models = ["nsfw"]
        versions = [2]
        operations = ["metadata", "ready"]

        [[rule]]
        name = "scoped"
        scopes = ["models:infer"]
        issuers = ["https://iss"]
        models = ["blaze*"]
        operations = ["infer"]

        [[rule]]
        name = "service cert"
        certificates = ["spiffe://warden.dev/svc/*"]
        models = ["*"]
        operations = ["ready"]

        [[rate]]
        subject = "bulk-*"
        rps = 5000
    "#;

    #[test]
    fn each_rule_allows_exactly_what_it_says() {
        let p = Policy::from_toml(POLICY).unwrap();
        let alice = principal("alice", &[], &[], None, Method::Jwt);
        assert!(p.allows(&alice, "resnet", None, Operation::Infer).is_some());
        assert!(
            p.allows(&alice, "resnet", Some(3), Operation::Infer)
                .is_some()
        );
        assert!(
            p.allows(&alice, "resnet", None, Operation::Metadata)
                .is_none(),
            "operation not granted"
        );
        assert!(
            p.allows(&alice, "nsfw", None, Operation::Infer).is_none(),
            "model not granted"
        );
        let bob = principal("bob", &[], &["ml"], None, Method::Jwt);
        assert!(
            p.allows(&bob, "nsfw", Some(2), Operation::Metadata)
                .is_some()
        );
        assert!(
            p.allows(&bob, "nsfw", Some(1), Operation::Metadata)
                .is_none(),
            "version not granted"
        );
        assert!(
            p.allows(&bob, "nsfw", None, Operation::Metadata).is_none(),
            "unversioned call to a versioned rule"
        );
        assert!(p.allows(&bob, "resnet", None, Operation::Infer).is_none());
        let scoped = principal("carol", &["models:infer"], &[], None, Method::Jwt);
        assert!(
            p.allows(&scoped, "blazeface", None, Operation::Infer)
                .is_some()
        );
        let mut other_iss = scoped.clone();
        other_iss.issuer = "https://other".into();
        assert!(
            p.allows(&other_iss, "blazeface", None, Operation::Infer)
                .is_none(),
            "issuer must match too"
        );
        let svc = principal(
            "spiffe://warden.dev/svc/a",
            &[],
            &[],
            Some("spiffe://warden.dev/svc/a"),
            Method::Mtls,
        );
        assert!(p.allows(&svc, "anything", None, Operation::Ready).is_some());
        assert!(p.allows(&svc, "anything", None, Operation::Infer).is_none());
        // A certificate whose identity looks like a subject does not match subject rules.
        let fake = principal("alice", &[], &[], Some("alice"), Method::Mtls);
        assert!(p.allows(&fake, "resnet", None, Operation::Infer).is_none());
        assert_eq!(
            p.rate_override(&principal("bulk-1", &[], &[], None, Method::Jwt)),
            Some(5000)
        );
        assert_eq!(p.rate_override(&alice), None);
    }

    #[test]
    fn rules_that_would_match_everyone_by_accident_are_refused() {
        assert!(
            Policy::from_toml("[[rule]]\nname='x'\nmodels=['*']\noperations=['infer']\n").is_err()
        );
        assert!(
            Policy::from_toml(
                "[[rule]]\nname='x'\nany_authenticated=true\nmodels=['*']\noperations=['infer']\n"
            )
            .is_ok()
        );
        assert!(
            Policy::from_toml(
                "[[rule]]\nname='x'\nsubjects=['a']\nmodels=[]\noperations=['infer']\n"
            )
            .is_err()
        );
        assert!(
            Policy::from_toml(
                "[[rule]]\nname='x'\nsubjects=['a']\nmodels=['m']\noperations=['delete']\n"
            )
            .is_err()
        );
        assert!(
            Policy::from_toml(
                "[[rule]]\nname='x'\nsubject=['a']\nmodels=['m']\noperations=['infer']\n"
            )
            .is_err(),
            "typo"
        );
        let empty = Policy::from_toml("").unwrap();
        let a = principal("a", &[], &[], None, Method::Jwt);
        assert!(
            empty.allows(&a, "m", None, Operation::Infer).is_none(),
            "default deny"
        );
    }

    #[test]
    fn operations_and_rules_are_named_as_warden_check_prints_them() {
        let names: Vec<&str> = [
            Operation::Infer,
            Operation::Metadata,
            Operation::Ready,
            Operation::Config,
            Operation::Stats,
            Operation::Admin,
        ]
        .iter()
        .map(|o| o.as_str())
        .collect();
        assert_eq!(
            names,
            ["infer", "metadata", "ready", "config", "stats", "admin"]
        );
        let p = Policy::from_toml(POLICY).unwrap();
        let lines = p.describe();
        assert_eq!(
            lines[1],
            "rule \"ml group metadata v2\": group in [\"ml\"] may metadata, ready on models [\"nsfw\"] (versions [2])"
        );
        assert_eq!(lines[4], "anything else: denied");
        assert_eq!(lines[5], "rate override: sub \"bulk-*\" at 5000 requests/s");
        assert!(Policy::open().describe()[0].starts_with("NONE CONFIGURED"));
    }

    fn from(sub: &str, iss: &str, scopes: &[&str]) -> Principal {
        let mut p = principal(sub, scopes, &[], None, Method::Jwt);
        p.issuer = iss.into();
        p
    }

    const A: &str = "https://a.example";
    const B: &str = "https://b.example";

    #[test]
    fn claim_rules_are_bound_to_issuers() {
        let text = r#"
            [[rule]]
            name = "admin of A"
            subjects = ["admin"]
            issuers = ["https://a.example"]
            models = ["*"]
            operations = ["infer", "metadata", "ready"]

            [[rule]]
            name = "scope of B"
            scopes = ["models:infer"]
            issuers = ["https://b.example"]
            models = ["resnet"]
            operations = ["infer"]

            [[rule]]
            name = "readers of any issuer"
            groups = ["readers"]
            issuers = ["*"]
            models = ["public*"]
            operations = ["metadata"]

            [[rule]]
            name = "service cert"
            certificates = ["spiffe://warden.dev/svc/*"]
            models = ["*"]
            operations = ["ready"]

            [[rate]]
            subject = "bulk-*"
            issuers = ["https://a.example"]
            rps = 5000
        "#;
        let mut p = Policy::from_toml(text).unwrap();
        p.bind_issuers(&[A.into(), B.into()]).unwrap();
        let mut reader_b = from("r", B, &[]);
        reader_b.groups = vec!["readers".into()];
        let mut reader_x509 = principal("r", &[], &["readers"], Some("r"), Method::Mtls);
        reader_x509.issuer = "x509".into();
        let svc = principal(
            "spiffe://warden.dev/svc/a",
            &[],
            &[],
            Some("spiffe://warden.dev/svc/a"),
            Method::Mtls,
        );
        // (what, principal, model, version, operation, the rule that allows it)
        type Case<'a> = (
            &'a str,
            Principal,
            &'a str,
            Option<u64>,
            Operation,
            Option<&'a str>,
        );
        let table: Vec<Case> = vec![
            (
                "A's admin",
                from("admin", A, &[]),
                "resnet",
                None,
                Operation::Infer,
                Some("admin of A"),
            ),
            (
                "A's admin, any version",
                from("admin", A, &[]),
                "resnet",
                Some(7),
                Operation::Metadata,
                Some("admin of A"),
            ),
            (
                "B minting A's admin sub",
                from("admin", B, &[]),
                "resnet",
                None,
                Operation::Infer,
                None,
            ),
            (
                "an unconfigured issuer minting admin",
                from("admin", "https://evil", &[]),
                "resnet",
                None,
                Operation::Ready,
                None,
            ),
            (
                "admin sub with different case",
                from("Admin", A, &[]),
                "resnet",
                None,
                Operation::Infer,
                None,
            ),
            (
                "B's scope",
                from("x", B, &["models:infer"]),
                "resnet",
                None,
                Operation::Infer,
                Some("scope of B"),
            ),
            (
                "A minting B's scope",
                from("x", A, &["models:infer"]),
                "resnet",
                None,
                Operation::Infer,
                None,
            ),
            (
                "B's scope, other model",
                from("x", B, &["models:infer"]),
                "nsfw",
                None,
                Operation::Infer,
                None,
            ),
            (
                "B's scope, other operation",
                from("x", B, &["models:infer"]),
                "resnet",
                None,
                Operation::Metadata,
                None,
            ),
            (
                "readers of B (any issuer)",
                reader_b.clone(),
                "public-1",
                None,
                Operation::Metadata,
                Some("readers of any issuer"),
            ),
            (
                "readers: not infer",
                reader_b,
                "public-1",
                None,
                Operation::Infer,
                None,
            ),
            (
                "a certificate is not an issuer's token",
                reader_x509,
                "public-1",
                None,
                Operation::Metadata,
                None,
            ),
            (
                "service cert",
                svc.clone(),
                "anything",
                None,
                Operation::Ready,
                Some("service cert"),
            ),
            (
                "service cert: not infer",
                svc,
                "anything",
                None,
                Operation::Infer,
                None,
            ),
        ];
        for (what, who, model, version, op, want) in table {
            assert_eq!(p.allows(&who, model, version, op), want, "{what}");
        }
        assert_eq!(p.rate_override(&from("bulk-1", A, &[])), Some(5000));
        assert_eq!(
            p.rate_override(&from("bulk-1", B, &[])),
            None,
            "B cannot mint A's rate"
        );
        let warnings = p.cross_issuer_warnings(&[A.into(), B.into()]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("readers of any issuer"));
        assert!(p.cross_issuer_warnings(&[A.into()]).is_empty());
    }

    #[test]
    fn unbound_claim_rules_bind_to_the_only_issuer_and_are_refused_with_several() {
        let text =
            "[[rule]]\nname='alice'\nsubjects=['alice']\nmodels=['m']\noperations=['infer']\n";
        let mut one = Policy::from_toml(text).unwrap();
        one.bind_issuers(&[A.into()]).unwrap();
        assert_eq!(one.rules[0].issuers, vec![A.to_string()]);
        assert!(
            one.allows(&from("alice", A, &[]), "m", None, Operation::Infer)
                .is_some()
        );
        assert!(
            one.allows(&from("alice", B, &[]), "m", None, Operation::Infer)
                .is_none()
        );
        let mut two = Policy::from_toml(text).unwrap();
        let e = two
            .bind_issuers(&[A.into(), B.into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"alice\"") && e.contains("names no issuers"),
            "{e}"
        );
        // An explicit `*` is accepted (and warned about by `warden check`).
        let star = text.replace("subjects=['alice']", "subjects=['alice']\nissuers=['*']");
        let mut any = Policy::from_toml(&star).unwrap();
        any.bind_issuers(&[A.into(), B.into()]).unwrap();
        assert!(
            any.allows(&from("alice", B, &[]), "m", None, Operation::Infer)
                .is_some()
        );
        // Rules on certificates only, or any_authenticated, need no issuer.
        let cert = "[[rule]]\nname='c'\ncertificates=['x']\nmodels=['m']\noperations=['infer']\n[[rule]]\nname='all'\nany_authenticated=true\nmodels=['m']\noperations=['ready']\n";
        Policy::from_toml(cert)
            .unwrap()
            .bind_issuers(&[A.into(), B.into()])
            .unwrap();
        // Rate overrides are bound the same way.
        let rate = "[[rate]]\nsubject='bulk-*'\nrps=10\n";
        assert!(
            Policy::from_toml(rate)
                .unwrap()
                .bind_issuers(&[A.into(), B.into()])
                .is_err()
        );
        let mut r = Policy::from_toml(rate).unwrap();
        r.bind_issuers(&[A.into()]).unwrap();
        assert_eq!(r.rate_override(&from("bulk-1", B, &[])), None);
        // No issuer configured (mTLS only): nothing to bind to, and nothing refused.
        let mut none = Policy::from_toml(text).unwrap();
        none.bind_issuers(&[]).unwrap();
        assert!(none.rules[0].issuers.is_empty());
    }

    #[test]
    fn a_policy_file_is_read_and_named_in_its_errors() {
        let dir = std::env::temp_dir().join(format!("warden-authz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.toml");
        std::fs::write(
            &path,
            "[[rule]]\nname='r'\nany_authenticated=true\nmodels=['m']\noperations=['infer']\n",
        )
        .unwrap();
        let p = Policy::from_file(&path).unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.rules[0].name, "r");
        assert!(!p.open);
        std::fs::write(&path, "[[rule]]\nname='r'\nmodels=['m']\n").unwrap();
        let e = Policy::from_file(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("policy {}: ", path.display())),
            "{e}"
        );
        // The configuration's policy: read and bound to the configured issuers (here
        // two plus the `jwt_*` shortcut, named once each, sorted).
        let mut config = warden_shared::config::Config::default();
        let issuer = |iss: &str| warden_shared::config::IssuerConfig {
            issuer: iss.into(),
            audiences: vec![],
            keys: vec![],
            hs256_secret: None,
        };
        config.auth.jwt_key = Some(dir.join("key.pem"));
        config.auth.jwt_issuer = Some(B.into());
        config.auth.issuers = vec![issuer(B), issuer(A)];
        assert_eq!(issuer_names(&config), [A, B]);
        assert!(
            load_policy(&config).unwrap().open,
            "no policy file: the open policy"
        );
        std::fs::write(
            &path,
            "[[rule]]\nname='alice'\nsubjects=['alice']\nmodels=['m']\noperations=['infer']\n",
        )
        .unwrap();
        config.auth.policy = Some(path.clone());
        let e = load_policy(&config).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("policy {}: ", path.display()))
                && e.contains("names no issuers"),
            "{e}"
        );
        config.auth.issuers.clear();
        let bound = load_policy(&config).unwrap();
        assert!(!bound.open);
        assert_eq!(bound.rules[0].issuers, [B]);
        let missing = dir.join("absent.toml");
        let e = Policy::from_file(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read policy {}: ", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
