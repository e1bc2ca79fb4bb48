//! The scope catalog: which scopes keys may carry, as defined by the deploying team.
//!
//! Each scope names the lowest organization role that may grant it, so a key never carries
//! more than its creator may grant (a developer cannot mint an `admin` key).

use std::{collections::BTreeSet, path::Path};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::orgs::Role;

#[derive(Debug, Clone, Deserialize)]
pub struct ScopeDef {
    /// The scope string keys carry, e.g. `read` or `costs:read`.
    pub name: String,
    /// Shown next to the checkbox.
    #[serde(default)]
    pub description: String,
    /// The lowest role that may grant this scope (default: developer).
    #[serde(default = "default_grant_role")]
    pub min_role: Role,
}

fn default_grant_role() -> Role {
    Role::Developer
}

#[derive(Debug, Clone, Deserialize)]
pub struct Preset {
    /// E.g. "Read-only".
    pub name: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScopeCatalog {
    pub scopes: Vec<ScopeDef>,
    #[serde(default)]
    pub presets: Vec<Preset>,
}

impl Default for ScopeCatalog {
    fn default() -> Self {
        let def = |name: &str, description: &str, min_role| ScopeDef {
            name: name.into(),
            description: description.into(),
            min_role,
        };
        let preset = |name: &str, scopes: &[&str]| Preset {
            name: name.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        Self {
            scopes: vec![
                def("read", "Read resources", Role::Developer),
                def("write", "Create and modify resources", Role::Developer),
                def("admin", "Administrative operations", Role::Admin),
                def(
                    "keys:read",
                    "Read this organization's Keyward keys and audit log (management API)",
                    Role::Developer,
                ),
                def(
                    "keys:write",
                    "Create, change, roll and revoke Keyward keys (management API)",
                    Role::Developer,
                ),
            ],
            presets: vec![
                preset("Read-only", &["read"]),
                preset("Read-write", &["read", "write"]),
                preset("Admin", &["read", "write", "admin"]),
            ],
        }
    }
}

/// Why a requested scope set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown scope \"{0}\"")]
    Unknown(String),
    #[error("your role cannot grant the scope \"{0}\"")]
    NotGrantable(String),
    #[error("choose at least one scope")]
    Empty,
}

impl ScopeCatalog {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading scope catalog {}", path.display()))?;
        let catalog: Self = toml::from_str(&text)
            .with_context(|| format!("parsing scope catalog {}", path.display()))?;
        catalog.validate()?;
        Ok(catalog)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.scopes.is_empty() {
            bail!("the scope catalog defines no scopes");
        }
        let mut seen = BTreeSet::new();
        for s in &self.scopes {
            let ok = !s.name.is_empty()
                && s.name.len() <= 64
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_:.-".contains(&b));
            if !ok {
                bail!(
                    "invalid scope name {:?}: use letters, digits and _ : . -",
                    s.name
                );
            }
            if !seen.insert(s.name.as_str()) {
                bail!("scope {:?} is defined twice", s.name);
            }
        }
        for p in &self.presets {
            for s in &p.scopes {
                if !seen.contains(s.as_str()) {
                    bail!("preset {:?} names unknown scope {s:?}", p.name);
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&ScopeDef> {
        self.scopes.iter().find(|s| s.name == name)
    }

    /// The requested scopes the catalog knows, deduplicated, in catalog order.
    pub fn in_catalog_order(&self, requested: &[String]) -> Vec<String> {
        self.scopes
            .iter()
            .filter(|s| requested.contains(&s.name))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Scopes this role may put on a key.
    pub fn grantable_by(&self, role: Role) -> impl Iterator<Item = &ScopeDef> {
        self.scopes
            .iter()
            .filter(move |s| role.at_least(s.min_role))
    }

    /// Checks a requested set against the catalog and the granting role; returns it sorted
    /// and deduplicated in catalog order.
    pub fn check(&self, requested: &[String], role: Role) -> Result<Vec<String>, ScopeError> {
        for r in requested {
            let def = self.get(r).ok_or_else(|| ScopeError::Unknown(r.clone()))?;
            if !role.at_least(def.min_role) {
                return Err(ScopeError::NotGrantable(r.clone()));
            }
        }
        let chosen = self.in_catalog_order(requested);
        if chosen.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(chosen)
    }

    /// Like [`check`](Self::check) for an edit: scopes the key already has and the editor
    /// could not grant may stay or be removed (narrowing a key is always allowed to whoever
    /// may change it), but none may be added beyond the editor's rights.
    pub fn check_edit(
        &self,
        requested: &[String],
        current: &[String],
        role: Role,
    ) -> Result<Vec<String>, ScopeError> {
        let added: Vec<String> = requested
            .iter()
            .filter(|r| !current.contains(r))
            .cloned()
            .collect();
        self.check(&added, role).or_else(|e| match e {
            ScopeError::Empty => Ok(vec![]),
            other => Err(other),
        })?;
        for r in requested {
            if self.get(r).is_none() {
                return Err(ScopeError::Unknown(r.clone()));
            }
        }
        let chosen = self.in_catalog_order(requested);
        if chosen.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(chosen)
    }
}

/// Scopes are stored as one space-separated string, in catalog order.
pub fn join(scopes: &[String]) -> String {
    scopes.join(" ")
}

pub fn split(stored: &str) -> Vec<String> {
    stored.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_catalog_matches_reference_presets() {
        let c = ScopeCatalog::default();
        c.validate().unwrap();
        assert_eq!(c.presets.len(), 3);
    }

    #[test]
    fn check_orders_dedups_and_enforces_roles() {
        let c = ScopeCatalog::default();
        assert_eq!(
            c.check(&s(&["write", "read", "read"]), Role::Developer)
                .unwrap(),
            s(&["read", "write"])
        );
        assert_eq!(
            c.check(&s(&["bogus"]), Role::Owner),
            Err(ScopeError::Unknown("bogus".into()))
        );
        assert_eq!(
            c.check(&s(&["admin"]), Role::Developer),
            Err(ScopeError::NotGrantable("admin".into()))
        );
        assert!(c.check(&s(&["admin"]), Role::Admin).is_ok());
        assert_eq!(c.check(&[], Role::Owner), Err(ScopeError::Empty));
    }

    #[test]
    fn edits_cannot_escalate() {
        let c = ScopeCatalog::default();
        // A developer may keep an admin scope they did not add, but not add one.
        assert!(
            c.check_edit(&s(&["read", "admin"]), &s(&["admin"]), Role::Developer)
                .is_ok()
        );
        assert!(
            c.check_edit(&s(&["read", "admin"]), &s(&["read"]), Role::Developer)
                .is_err()
        );
        // …and may drop it: narrowing (a demoted member's key) needs no power to grant.
        assert_eq!(
            c.check_edit(&s(&["read"]), &s(&["read", "admin"]), Role::Developer),
            Ok(s(&["read"]))
        );
    }

    #[test]
    fn example_catalog_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scopes.example.toml");
        let c = ScopeCatalog::from_file(&path).unwrap();
        assert_eq!(c.get("admin").unwrap().min_role, Role::Admin);
        assert_eq!(c.presets.len(), 3);
    }

    #[test]
    fn catalog_file_is_validated() {
        let bad: ScopeCatalog = toml::from_str("[[scopes]]\nname = \"a b\"\n").unwrap();
        assert!(bad.validate().is_err());
        let good: ScopeCatalog = toml::from_str(
            "[[scopes]]\nname = \"costs:read\"\n[[presets]]\nname = \"R\"\nscopes = [\"costs:read\"]\n",
        )
        .unwrap();
        good.validate().unwrap();
        assert_eq!(good.scopes[0].min_role, Role::Developer);
    }
}
