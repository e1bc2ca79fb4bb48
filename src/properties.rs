//! Property tests of every parser that reads untrusted input (SECURITY.md R7): none may
//! panic, and each keeps its promise for any input. CI runs proptest's default 256 cases
//! per property (seconds); a long campaign: `PROPTEST_CASES=1000000 cargo test --lib
//! properties`. A failure proptest finds is saved under `proptest-regressions/` and
//! replayed first on every later run (commit it as the regression test).

use std::net::{IpAddr, Ipv4Addr};

use axum::http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;

use crate::{
    auth::session::safe_next,
    config::KeyPepper,
    keys::{
        model::{IpAllowlist, MAX_METADATA, MAX_METADATA_DEPTH, Metadata},
        scopes::ScopeCatalog,
        token::{Environment, PlainKey},
    },
    orgs::Role,
    verify::{
        http::{bearer, key_in_query},
        ip_allowed,
    },
};

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    /// Any input: no panic; whatever parses has the key shape, and hashes.
    #[test]
    fn key_parser_never_panics(input in ".{0,120}") {
        if let Ok((key, _)) = PlainKey::parse("kw", &input) {
            prop_assert!(key.expose().starts_with("kw_"));
            let _ = key.hash(&KeyPepper::new(vec![7; 32]));
        }
    }

    /// A generated key parses; changing any one character of it never does (the checksum,
    /// or the format, catches it).
    #[test]
    fn one_changed_character_is_caught(pos in 0usize..70, c in proptest::char::range('0', 'z'), live in any::<bool>()) {
        let env = if live { Environment::Live } else { Environment::Test };
        let key = PlainKey::generate("kw", env).unwrap();
        let s = key.expose().to_string();
        prop_assert!(PlainKey::parse("kw", &s).is_ok());
        let pos = pos % s.len();
        let mut bytes = s.into_bytes();
        // Always a different character.
        let c = c as u8;
        bytes[pos] = if bytes[pos] == c { if c == b'z' { b'0' } else { c + 1 } } else { c };
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(PlainKey::parse("kw", &changed).is_err(), "{changed}");
    }

    /// `next=` can only ever lead to a local path on this site.
    #[test]
    fn redirects_stay_on_the_site(input in prop_oneof![".{0,60}", "(/|//|/\\\\|%2F|%5C|https?:|\\.)[a-z./%\\\\:@]{0,30}"]) {
        let out = safe_next(Some(&input));
        for s in [out.clone(), urlencoding::decode(&out).map(|c| c.into_owned()).unwrap_or_default()] {
            prop_assert!(s.starts_with('/'), "{s}");
            prop_assert!(!s.starts_with("//") && !s.starts_with("/\\"), "{s}");
            prop_assert!(!s.chars().any(|c| c.is_control() || c == '\\'), "{s:?}");
        }
        prop_assert!(out == input || out == "/settings/api-keys");
    }

    /// Allowlist text: no panic on any input; a parsed IPv4 range allows exactly the
    /// addresses it contains.
    #[test]
    fn allowlists_allow_what_they_contain(text in ".{0,80}", a in any::<u32>(), len in 0u8..=32, probe in any::<u32>()) {
        let _ = IpAllowlist::parse_text(&text);
        let net = ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc();
        let list = IpAllowlist::parse_text(&net.to_string()).unwrap();
        let ip = Ipv4Addr::from(probe);
        prop_assert_eq!(ip_allowed(&list.to_stored(), Some(IpAddr::V4(ip))), net.contains(&ip));
        prop_assert!(!ip_allowed(&list.to_stored(), None), "no address, no entry");
    }

    /// Scope lists: no panic; what is accepted is a non-empty subset of the catalog that
    /// the role may grant.
    #[test]
    fn scope_lists_stay_in_the_catalog(requested in proptest::collection::vec(".{0,12}|read|write|admin|keys:read|keys:write", 0..6)) {
        let catalog = ScopeCatalog::default();
        if let Ok(chosen) = catalog.check(&requested, Role::Developer) {
            prop_assert!(!chosen.is_empty());
            for s in &chosen {
                let def = catalog.get(s);
                prop_assert!(def.is_some_and(|d| Role::Developer.at_least(d.min_role)), "{s}");
                prop_assert!(requested.contains(s));
            }
        }
    }

    /// Metadata: no panic; what is accepted is a JSON object within the size and depth
    /// limits.
    #[test]
    fn metadata_stays_within_its_limits(text in prop_oneof![".{0,64}", "[\\[{\"a:1,}\\] ]{0,80}"], nest in 0usize..20) {
        for input in [text.clone(), format!("{}1{}", "{\"a\":[".repeat(nest), "]}".repeat(nest))] {
            if let Ok(m) = Metadata::parse(&input) {
                let stored = m.as_str().to_string();
                prop_assert!(stored.len() <= MAX_METADATA);
                let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
                prop_assert!(v.is_object());
                prop_assert!(depth(&v) <= MAX_METADATA_DEPTH, "{stored}");
            }
        }
    }

    /// Forward-auth's header and URL parsing: no panic on any value; a key in the query is
    /// found however it is encoded or separated.
    #[test]
    fn forward_auth_inputs(value in "[ -~]{0,80}", sep in prop_oneof![Just('&'), Just(';')], times in 0usize..3) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header::AUTHORIZATION, v);
            if let Some(token) = bearer(&headers) {
                prop_assert!(value.to_ascii_lowercase().starts_with("bearer "));
                prop_assert_eq!(token, token.trim());
            }
        }
        let _ = key_in_query(&format!("/x?{value}"), "kw");
        let key = PlainKey::generate("kw", Environment::Live).unwrap();
        let mut encoded = key.expose().to_string();
        for _ in 0..times {
            encoded = urlencoding::encode(&encoded).into_owned();
        }
        let uri = format!("/x?page=1{sep}k={encoded}");
        prop_assert!(key_in_query(&uri, "kw"), "{uri}");
    }

    /// An authenticator code is six digits (spaces ignored) or nothing, whatever is typed
    /// and whatever the clock says; and the code of a step matches that step.
    #[test]
    fn totp_codes(typed in prop_oneof![".{0,16}", "[0-9 ]{0,10}"], now in any::<i64>(), secret in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Some(step) = crate::two_step::totp::matching_step(&secret, &typed, now) {
            let digits: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
            prop_assert!(digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!(step >= 0);
        }
        let _ = crate::two_step::totp::secret_from_text(&typed);
    }

    /// Recovery codes hash as typed modulo case, spaces and dashes; any text hashes.
    #[test]
    fn recovery_codes(typed in ".{0,40}") {
        let key = [7u8; 32];
        let h = crate::two_step::recovery::hash(&key, &typed);
        prop_assert_eq!(h.len(), 64);
        let noisy = format!(" {}-", typed.to_uppercase());
        if typed.is_ascii() {
            prop_assert_eq!(h, crate::two_step::recovery::hash(&key, &noisy));
        }
    }

    /// Passkey bodies from the browser (registration and assertion) are refused, never a
    /// panic, whatever JSON arrives.
    #[test]
    fn passkey_bodies(text in prop_oneof![".{0,200}", "\\{\"credential\":\\{\"id\":\"[A-Za-z0-9_-]{0,20}\",\"rawId\":\"[A-Za-z0-9_-]{0,20}\",\"type\":\"public-key\",\"response\":\\{[a-zA-Z\":,]{0,60}\\}\\}\\}"]) {
        let _ = serde_json::from_str::<crate::two_step::passkeys::RegisterBody>(&text);
        let _ = serde_json::from_str::<crate::two_step::passkeys::AssertionBody>(&text);
    }
}
