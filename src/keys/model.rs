//! A key's settings as typed values, parsed once at the door ("parse, don't validate").
//!
//! The dashboard's form and the management API's JSON both become a [`KeyInput`] (create)
//! or a [`KeyPatch`] (edit); what fails to parse is a [`FieldErrors`] keyed by [`Field`],
//! which each door renders its own way. Rules that depend on who acts or on the key's
//! current state live in the service (`super::service`), not here.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::{
    ExpiryChoice,
    scopes::{ScopeCatalog, ScopeError},
    token::Environment,
};
use crate::store::KeyLimits;

pub const MAX_NAME: usize = 100;
pub const MAX_DESCRIPTION: usize = 500;
pub const MAX_LIMIT: i64 = 1_000_000_000;
pub const MAX_METADATA: usize = 4096;
pub const MAX_ALLOWLIST: usize = 100;

/// A field of a key's settings that can be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Name,
    Description,
    Environment,
    Scopes,
    Expiry,
    /// Rate limit, burst and daily quota.
    Limits,
    RateWindow,
    IpAllowlist,
    Metadata,
    Grace,
    /// The revocation reason and its note.
    Reason,
    /// The credit balance, refill and low-balance threshold.
    Credits,
}

impl Field {
    /// The field's name in the management API's JSON.
    pub fn api_name(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Description => "description",
            Field::Environment => "environment",
            Field::Scopes => "scopes",
            Field::Expiry => "expires_at",
            Field::Limits => "rate_limit",
            Field::RateWindow => "rate_window_seconds",
            Field::IpAllowlist => "ip_allowlist",
            Field::Metadata => "metadata",
            Field::Grace => "grace",
            Field::Reason => "reason",
            Field::Credits => "credits",
        }
    }
}

/// What is wrong with which field (the first message per field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<Field, String>);

impl FieldErrors {
    pub fn add(&mut self, field: Field, message: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| message.into());
    }
    pub fn get(&self, field: Field) -> Option<&str> {
        self.0.get(&field).map(String::as_str)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (Field, &str)> {
        self.0.iter().map(|(f, m)| (*f, m.as_str()))
    }
    pub fn one(field: Field, message: impl Into<String>) -> Self {
        let mut e = Self::default();
        e.add(field, message);
        e
    }
    /// Records the error of `result` under `field`; the value if there was none.
    pub fn take<T>(&mut self, field: Field, result: Result<T, String>) -> Option<T> {
        result.map_err(|m| self.add(field, m)).ok()
    }
}

/// A key's name: trimmed, 1–100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let name = s.trim();
        let n = name.chars().count();
        if n == 0 {
            Err("Give the key a name, so you can tell it apart later.".into())
        } else if n > MAX_NAME {
            Err(format!(
                "Use at most {MAX_NAME} characters (this name has {n})."
            ))
        } else if name.chars().any(char::is_control) {
            Err("The name cannot contain control characters.".into())
        } else if name.chars().any(is_bidi_control) {
            Err("The name cannot contain bidirectional-override characters (they can make a name read as another).".into())
        } else {
            Ok(Self(name.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that reorder the text around them (U+202A–U+202E, U+2066–U+2069): in a name
/// they make `gnp.exe` read as `exe.png`.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A key's description: trimmed, at most 500 characters, line breaks but no other control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description(String);

impl Description {
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = s.trim();
        let n = d.chars().count();
        if n > MAX_DESCRIPTION {
            return Err(format!(
                "Use at most {MAX_DESCRIPTION} characters (this has {n})."
            ));
        }
        if d.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err("The description cannot contain control characters.".into());
        }
        Ok(Self(d.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of scopes from the catalog, in catalog order, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// Requested scope names, each of which must be in the catalog.
    pub fn parse(requested: &[String], catalog: &ScopeCatalog) -> Result<Self, String> {
        if let Some(unknown) = requested.iter().find(|r| catalog.get(r).is_none()) {
            return Err(scope_message(&ScopeError::Unknown(unknown.clone())));
        }
        let chosen = catalog.in_catalog_order(requested);
        if chosen.is_empty() {
            return Err(scope_message(&ScopeError::Empty));
        }
        Ok(Self(chosen))
    }
    /// Scopes as stored (space-separated, already checked when written).
    pub fn from_stored(stored: &str) -> Self {
        Self(super::scopes::split(stored))
    }
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
    pub fn to_stored(&self) -> String {
        super::scopes::join(&self.0)
    }
}

/// A scope refusal as a sentence.
pub fn scope_message(e: &ScopeError) -> String {
    match e {
        ScopeError::Empty => "Choose at least one scope.".into(),
        other => {
            let s = other.to_string();
            format!("{}{}.", s[..1].to_uppercase(), &s[1..])
        }
    }
}

/// The window a rate limit counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateWindow {
    Second,
    #[default]
    Minute,
    Hour,
}

impl RateWindow {
    pub const ALL: [RateWindow; 3] = [RateWindow::Second, RateWindow::Minute, RateWindow::Hour];
    pub const CHOOSE: &'static str = "Choose per second, per minute or per hour.";

    /// The form value.
    pub fn name(self) -> &'static str {
        match self {
            RateWindow::Second => "second",
            RateWindow::Minute => "minute",
            RateWindow::Hour => "hour",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            RateWindow::Second => "per second",
            RateWindow::Minute => "per minute",
            RateWindow::Hour => "per hour",
        }
    }
    pub fn secs(self) -> i64 {
        match self {
            RateWindow::Second => 1,
            RateWindow::Minute => 60,
            RateWindow::Hour => 3600,
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }
    pub fn from_secs(secs: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.secs() == secs)
    }
}

/// An optional count typed as text (a form field): empty for none.
pub fn optional_count(s: &str, what: &str) -> Result<Option<i64>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    count(s.parse::<i64>().unwrap_or(0), what).map(Some)
}

/// A count from 1 to [`MAX_LIMIT`].
pub fn count(n: i64, what: &str) -> Result<i64, String> {
    if (1..=MAX_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{what} must be a whole number from 1 to {MAX_LIMIT}, or empty for none."
        ))
    }
}

/// IP networks a key may be used from (empty: anywhere).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    /// Addresses or CIDR ranges, separated by whitespace or commas.
    pub fn parse_text(s: &str) -> Result<Self, String> {
        Self::parse(s.split(|c: char| c.is_whitespace() || c == ','))
    }
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let entries: Vec<&str> = entries.into_iter().filter(|e| !e.is_empty()).collect();
        if entries.len() > MAX_ALLOWLIST {
            return Err(format!("List at most {MAX_ALLOWLIST} addresses or ranges."));
        }
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let Some(n) = crate::verify::parse_network(e) else {
                return Err(format!(
                    "“{e}” is not an IP address or CIDR range (like 203.0.113.0/24 or 2001:db8::/32)."
                ));
            };
            nets.push(n.trunc());
        }
        Ok(Self(nets))
    }
    pub fn from_stored(stored: &str) -> Self {
        Self(
            stored
                .split_whitespace()
                .filter_map(crate::verify::parse_network)
                .collect(),
        )
    }
    pub fn to_stored(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Whether every address this list allows, `other` allows too.
    pub fn within(&self, other: &IpAllowlist) -> bool {
        other.is_empty()
            || (!self.is_empty() && self.0.iter().all(|n| other.0.iter().any(|o| o.contains(n))))
    }
}

pub const MAX_METADATA_DEPTH: usize = 8;

/// How deeply a JSON value nests (a scalar is 0).
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether any string (or object key) in a JSON value holds a control character.
fn has_control(v: &serde_json::Value) -> bool {
    let bad = |s: &str| s.chars().any(char::is_control);
    match v {
        serde_json::Value::String(s) => bad(s),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| bad(k) || has_control(v)),
        serde_json::Value::Array(a) => a.iter().any(has_control),
        _ => false,
    }
}

/// A JSON object the verifier returns with the key (at most 4 KiB, 8 levels, no control
/// characters in its strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata(String);

impl Default for Metadata {
    fn default() -> Self {
        Self("{}".into())
    }
}

impl Metadata {
    pub fn parse(s: &str) -> Result<Self, String> {
        let meta = s.trim();
        if meta.is_empty() {
            return Ok(Self::default());
        }
        if meta.len() > MAX_METADATA {
            return Err(format!("Metadata is limited to {MAX_METADATA} bytes."));
        }
        match serde_json::from_str::<serde_json::Value>(meta) {
            Ok(v @ serde_json::Value::Object(_)) => {
                if depth(&v) > MAX_METADATA_DEPTH {
                    return Err(format!(
                        "Metadata can nest at most {MAX_METADATA_DEPTH} levels deep."
                    ));
                }
                if has_control(&v) {
                    return Err("Metadata cannot contain control characters.".into());
                }
                Ok(Self(v.to_string()))
            }
            _ => Err("Metadata must be a JSON object, like {\"plan\": \"pro\"}.".into()),
        }
    }
    pub fn from_stored(stored: &str) -> Self {
        Self(stored.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Rate limit, burst and quota; `None` is "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    pub limit: Option<i64>,
    pub window: RateWindow,
    pub burst: Option<i64>,
    pub daily_quota: Option<i64>,
}

impl Rate {
    /// A burst needs a rate limit.
    pub fn check(self) -> Result<Self, String> {
        if self.burst.is_some() && self.limit.is_none() {
            return Err("Set a rate limit to use a burst size.".into());
        }
        Ok(self)
    }
}

/// A new key's settings.
#[derive(Debug, Clone)]
pub struct KeyInput {
    pub name: KeyName,
    pub description: Description,
    pub environment: Environment,
    pub scopes: Scopes,
    pub expiry: ExpiryChoice,
    /// For [`ExpiryChoice::Custom`]: the date typed (YYYY-MM-DD).
    pub custom_date: String,
    pub rate: Rate,
    pub ip_allowlist: IpAllowlist,
    pub metadata: Metadata,
}

/// Changes to a key; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<KeyName>,
    pub description: Option<Description>,
    pub scopes: Option<Scopes>,
    pub expiry: Option<ExpiryChoice>,
    pub custom_date: String,
    pub rate_limit: Option<Option<i64>>,
    pub rate_window: Option<RateWindow>,
    pub rate_burst: Option<Option<i64>>,
    pub daily_quota: Option<Option<i64>>,
    pub ip_allowlist: Option<IpAllowlist>,
    pub metadata: Option<Metadata>,
    pub enabled: Option<bool>,
}

/// Why a key was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    Compromised,
    NoLongerNeeded,
    Rotated,
    MemberLeft,
    Other,
}

impl RevocationReason {
    pub const ALL: [RevocationReason; 5] = [
        RevocationReason::Compromised,
        RevocationReason::NoLongerNeeded,
        RevocationReason::Rotated,
        RevocationReason::MemberLeft,
        RevocationReason::Other,
    ];
    pub const MAX_NOTE: usize = 200;

    /// The stored and API form.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Compromised => "compromised",
            RevocationReason::NoLongerNeeded => "no_longer_needed",
            RevocationReason::Rotated => "rotated",
            RevocationReason::MemberLeft => "member_left",
            RevocationReason::Other => "other",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            RevocationReason::Compromised => "Compromised (leaked or exposed)",
            RevocationReason::NoLongerNeeded => "No longer needed",
            RevocationReason::Rotated => "Rotated (replaced by another key)",
            RevocationReason::MemberLeft => "Its member left",
            RevocationReason::Other => "Other",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A revocation's reason (optional: older clients send none) and note ("other" needs one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocation {
    pub reason: Option<RevocationReason>,
    pub note: String,
}

impl Revocation {
    pub fn parse(reason: &str, note: &str) -> Result<Self, String> {
        let note = note.trim();
        let n = note.chars().count();
        if n > RevocationReason::MAX_NOTE {
            return Err(format!(
                "Keep the note to {} characters (this has {n}).",
                RevocationReason::MAX_NOTE
            ));
        }
        if note.chars().any(char::is_control) {
            return Err("The note cannot contain control characters.".into());
        }
        let reason = match reason.trim() {
            "" => None,
            r => Some(RevocationReason::parse(r).ok_or_else(|| {
                "Choose a reason: compromised, no_longer_needed, rotated, member_left or other."
                    .to_string()
            })?),
        };
        if reason == Some(RevocationReason::Other) && note.is_empty() {
            return Err("Say why in the note when the reason is “other”.".into());
        }
        Ok(Self {
            reason,
            note: note.to_string(),
        })
    }

    pub fn because(reason: RevocationReason) -> Self {
        Self {
            reason: Some(reason),
            note: String::new(),
        }
    }

    /// The audit event's details: `reason` and `note` when given.
    pub fn details(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(r) = self.reason {
            m.insert("reason".into(), r.as_str().into());
        }
        if !self.note.is_empty() {
            m.insert("note".into(), self.note.clone().into());
        }
        serde_json::Value::Object(m)
    }

    /// "Compromised (leaked or exposed): found in a CI log", from an event's details.
    pub fn describe(details: &serde_json::Value) -> Option<String> {
        let label = details["reason"]
            .as_str()
            .and_then(RevocationReason::parse)
            .map(RevocationReason::label);
        let note = details["note"].as_str().filter(|n| !n.is_empty());
        match (label, note) {
            (Some(l), Some(n)) => Some(format!("{l}: {n}")),
            (Some(l), None) => Some(l.to_string()),
            (None, Some(n)) => Some(n.to_string()),
            (None, None) => None,
        }
    }
}

/// The stored limits of typed settings.
pub fn limits(rate: Rate, ip_allowlist: &IpAllowlist, metadata: &Metadata) -> KeyLimits {
    KeyLimits {
        rate_limit: rate.limit,
        rate_window_secs: rate.window.secs(),
        rate_burst: rate.burst,
        daily_quota: rate.daily_quota,
        ip_allowlist: ip_allowlist.to_stored(),
        metadata: metadata.as_str().to_string(),
    }
}

/// The parts of a new key's settings as each door parsed them (`None`: refused, with its
/// message in the errors).
#[derive(Default)]
pub struct KeyDraft {
    pub name: Option<KeyName>,
    pub description: Option<Description>,
    pub environment: Option<Environment>,
    pub scopes: Option<Scopes>,
    pub expiry: Option<ExpiryChoice>,
    pub custom_date: String,
    pub rate: Option<Rate>,
    pub ip_allowlist: Option<IpAllowlist>,
    pub metadata: Option<Metadata>,
}

impl KeyDraft {
    /// Name, description, environment and scopes, which every door sends as text alike.
    pub fn common(
        name: &str,
        description: &str,
        environment: &str,
        scopes: &[String],
        catalog: &ScopeCatalog,
        errors: &mut FieldErrors,
    ) -> Self {
        Self {
            name: errors.take(Field::Name, KeyName::parse(name)),
            description: errors.take(Field::Description, Description::parse(description)),
            environment: errors.take(
                Field::Environment,
                Environment::parse(environment).ok_or_else(|| "Choose live or test.".to_string()),
            ),
            scopes: errors.take(Field::Scopes, Scopes::parse(scopes, catalog)),
            ..Self::default()
        }
    }

    /// The input, if every part parsed.
    pub fn finish(self, errors: FieldErrors) -> Result<KeyInput, FieldErrors> {
        let input = (|| {
            Some(KeyInput {
                name: self.name?,
                description: self.description?,
                environment: self.environment?,
                scopes: self.scopes?,
                expiry: self.expiry?,
                custom_date: self.custom_date,
                rate: self.rate?,
                ip_allowlist: self.ip_allowlist?,
                metadata: self.metadata?,
            })
        })();
        match input {
            Some(input) if errors.is_empty() => Ok(input),
            _ => Err(errors),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(KeyName::parse("  ci  ").unwrap().as_str(), "ci");
        assert!(KeyName::parse("   ").is_err());
        assert!(KeyName::parse(&"x".repeat(101)).is_err());
        assert!(KeyName::parse("a\u{0}b").is_err());
        assert!(KeyName::parse("\u{202E}gnp.exe").is_err());
        assert!(KeyName::parse("caf\u{e9} \u{1F511}").is_ok());
    }

    #[test]
    fn descriptions_keep_line_breaks_but_no_other_control_characters() {
        assert!(Description::parse("line one\nline two\ttabbed").is_ok());
        assert!(Description::parse("a\u{0}b").is_err());
        assert!(Description::parse("a\u{1b}[31mred").is_err());
    }

    #[test]
    fn allowlists_are_normalized_and_compared() {
        let wide = IpAllowlist::parse_text("10.0.0.0/8").unwrap();
        let narrow = IpAllowlist::parse_text("10.1.2.3, 10.2.0.0/16").unwrap();
        assert!(narrow.within(&wide));
        assert!(!wide.within(&narrow));
        assert!(wide.within(&IpAllowlist::default()), "anywhere allows all");
        assert!(!IpAllowlist::default().within(&wide), "anywhere is wider");
        assert_eq!(
            IpAllowlist::parse_text("10.1.2.3/8").unwrap().to_stored(),
            "10.0.0.0/8"
        );
        assert!(IpAllowlist::parse_text("nope").is_err());
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert_eq!(Metadata::parse("").unwrap().as_str(), "{}");
        assert!(Metadata::parse("[1]").is_err());
        assert!(Metadata::parse("{\"a\": \"\\u0000\"}").is_err());
        let deep = format!("{}1{}", "{\"a\":".repeat(9), "}".repeat(9));
        assert!(Metadata::parse(&deep).is_err());
        let ok = format!("{}1{}", "{\"a\":".repeat(8), "}".repeat(8));
        assert!(Metadata::parse(&ok).is_ok());
        assert_eq!(Metadata::parse("{\"a\": 1}").unwrap().as_str(), "{\"a\":1}");
    }

    #[test]
    fn scopes_come_from_the_catalog_in_its_order() {
        let c = ScopeCatalog::default();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Scopes::parse(&s(&["write", "read"]), &c)
                .unwrap()
                .as_slice(),
            s(&["read", "write"])
        );
        assert!(Scopes::parse(&s(&["bogus"]), &c).is_err());
        assert!(Scopes::parse(&[], &c).is_err());
    }

    #[test]
    fn revocation_reasons() {
        assert_eq!(Revocation::parse("", ""), Ok(Revocation::default()));
        let r = Revocation::parse("compromised", " in a CI log ").unwrap();
        assert_eq!(
            r.details(),
            serde_json::json!({ "reason": "compromised", "note": "in a CI log" })
        );
        assert_eq!(
            Revocation::describe(&r.details()).as_deref(),
            Some("Compromised (leaked or exposed): in a CI log")
        );
        assert!(Revocation::parse("bogus", "").is_err());
        assert!(
            Revocation::parse("other", "").is_err(),
            "other needs a note"
        );
        assert!(Revocation::parse("other", "a\u{0}b").is_err());
    }

    #[test]
    fn counts_and_windows() {
        assert_eq!(optional_count(" ", "x"), Ok(None));
        assert_eq!(optional_count("5", "x"), Ok(Some(5)));
        assert!(optional_count("0", "x").is_err());
        assert!(optional_count("1.5", "x").is_err());
        assert_eq!(RateWindow::from_secs(3600), Some(RateWindow::Hour));
        assert_eq!(RateWindow::from_name("day"), None);
    }
}
