//! Branding: the deploying team's product name, logo, accent colour, support contacts and
//! email sender name (`KEYWARD_PRODUCT_NAME`, `KEYWARD_LOGO`, `KEYWARD_ACCENT_COLOR`,
//! `KEYWARD_SUPPORT_URL`, `KEYWARD_SUPPORT_EMAIL`, `KEYWARD_MAIL_SENDER_NAME`), checked
//! once at start-up.
//!
//! Pages read the branding of the deployment that serves them through [`current`]: the
//! [`scope`] middleware sets it for each dashboard and management-API request, so that the
//! 32 page view models do not each carry a copy, and so that several deployments (the
//! tests' apps) can share one process. Emails and other texts built in handlers read
//! `state.config.branding` (emails are also sent from background tasks, outside any request).
//!
//! The accent colour reaches the pages through a generated stylesheet (`/brand.css`, CSS
//! custom properties), never inline styles: the Content-Security-Policy allows styles from
//! this origin only.

use std::sync::{Arc, LazyLock};

use anyhow::{Context, bail};
use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::state::AppState;

/// The name used when `KEYWARD_PRODUCT_NAME` is not set.
pub const DEFAULT_PRODUCT_NAME: &str = "Keyward";

/// WCAG 2.x level AA: the least contrast for normal-size text.
pub const WCAG_AA_NORMAL_TEXT: f64 = 4.5;

/// Keyward's own accent (static/app.css `--accent`), used for the favicon when the operator
/// chose none.
const DEFAULT_ACCENT: Rgb = Rgb(0x4f, 0x46, 0xe5);

/// Text drawn on the accent colour (buttons, the current page number): static/app.css.
const TEXT_ON_ACCENT: (Rgb, &str) = (Rgb(0xff, 0xff, 0xff), "the white text of buttons");
/// The light scheme's page background (`--bg`), where accent-coloured links are drawn.
const PAGE_BACKGROUND: (Rgb, &str) = (Rgb(0xf6, 0xf8, 0xfa), "the page background #f6f8fa");

/// The largest logo file served (it is kept in memory).
const MAX_LOGO_BYTES: usize = 512 * 1024;

/// The deployment's branding, resolved and checked.
#[derive(Debug, Clone)]
pub struct Branding {
    /// Shown in page titles, the header, sign-in pages and emails.
    pub product_name: String,
    pub logo: Option<Logo>,
    /// `None`: Keyward's own palette.
    pub accent: Option<Rgb>,
    pub support_url: Option<String>,
    pub support_email: Option<String>,
    /// Display name of the `From` address of emails.
    pub mail_sender_name: String,
}

impl Default for Branding {
    fn default() -> Self {
        Self::named(DEFAULT_PRODUCT_NAME)
    }
}

/// The operator's branding settings as given (the `KEYWARD_*` variables), before checks.
#[derive(Debug, Clone, Default)]
pub struct BrandSettings {
    pub product_name: Option<String>,
    pub logo: Option<String>,
    pub accent_color: Option<String>,
    pub support_url: Option<String>,
    pub support_email: Option<String>,
    pub mail_sender_name: Option<String>,
}

/// The logo: a file Keyward serves at [`LOGO_PATH`], or an image elsewhere on Keyward's own
/// origin.
#[derive(Clone)]
pub enum Logo {
    File {
        bytes: Arc<[u8]>,
        content_type: &'static str,
        /// Changes with the file, so browsers fetch a new logo (`?v=`).
        version: String,
    },
    Url(String),
}

impl std::fmt::Debug for Logo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Logo::File {
                bytes,
                content_type,
                ..
            } => write!(f, "Logo::File({content_type}, {} bytes)", bytes.len()),
            Logo::Url(url) => write!(f, "Logo::Url({url})"),
        }
    }
}

/// Where a logo file is served.
pub const LOGO_PATH: &str = "/brand/logo";

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#1a73e8` or `#18e` (case-insensitive; the `#` is optional).
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.trim().strip_prefix('#').unwrap_or(text.trim());
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let channel = |s: &str| u8::from_str_radix(s, 16).ok();
        match hex.len() {
            6 => Some(Self(
                channel(&hex[0..2])?,
                channel(&hex[2..4])?,
                channel(&hex[4..6])?,
            )),
            3 => {
                let d = |i: usize| channel(&hex[i..=i]).map(|v| v * 17);
                Some(Self(d(0)?, d(1)?, d(2)?))
            }
            _ => None,
        }
    }

    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// Relative luminance (WCAG 2.x).
    pub fn luminance(self) -> f64 {
        let lin = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }

    /// `self` moved towards `other` by `t` (0 = self, 1 = other).
    fn mix(self, other: Rgb, t: f64) -> Rgb {
        let m = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
        Rgb(m(self.0, other.0), m(self.1, other.1), m(self.2, other.2))
    }
}

/// The WCAG contrast ratio of two colours (1 to 21).
pub fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (a.luminance(), b.luminance());
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// A ratio as people read it, rounded down so that a failing one never prints as 4.5:1.
fn ratio_text(r: f64) -> String {
    format!("{:.2}:1", (r * 100.0).floor() / 100.0)
}

/// Refuses an accent colour that text drawn on it, or drawn in it on the page, cannot be
/// read against (WCAG AA for normal text).
pub fn check_accent(accent: Rgb) -> anyhow::Result<()> {
    for (other, what) in [TEXT_ON_ACCENT, PAGE_BACKGROUND] {
        let ratio = contrast(accent, other);
        if ratio < WCAG_AA_NORMAL_TEXT {
            bail!(
                "KEYWARD_ACCENT_COLOR {} has a contrast of {} with {what}; WCAG AA needs at least \
                 {WCAG_AA_NORMAL_TEXT}:1 for normal text. Choose a darker colour.",
                accent.hex(),
                ratio_text(ratio),
            );
        }
    }
    Ok(())
}

impl Branding {
    /// Keyward's look with another product name (tests, embedding).
    pub fn named(product_name: &str) -> Self {
        Self {
            product_name: product_name.to_string(),
            logo: None,
            accent: None,
            support_url: None,
            support_email: None,
            mail_sender_name: product_name.to_string(),
        }
    }

    /// Checks the operator's settings. `base_url` is the dashboard's public URL: a logo
    /// given as a URL must be on its origin (the Content-Security-Policy allows images from
    /// there only).
    pub fn resolve(settings: &BrandSettings, base_url: &str) -> anyhow::Result<Self> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let product_name =
            given(&settings.product_name).unwrap_or_else(|| DEFAULT_PRODUCT_NAME.into());
        if product_name.chars().count() > 60 || product_name.chars().any(char::is_control) {
            bail!(
                "KEYWARD_PRODUCT_NAME must be at most 60 characters without control characters, got {product_name:?}"
            );
        }
        let accent = match given(&settings.accent_color) {
            None => None,
            Some(text) => {
                let rgb = Rgb::parse(&text).with_context(|| {
                    format!("KEYWARD_ACCENT_COLOR must be a hex colour like #1967d2, got {text:?}")
                })?;
                check_accent(rgb)?;
                Some(rgb)
            }
        };
        let logo = given(&settings.logo)
            .map(|logo| resolve_logo(&logo, base_url))
            .transpose()?;
        let support_url = given(&settings.support_url)
            .map(|url| {
                if url.starts_with("https://") || url.starts_with("http://") {
                    Ok(url)
                } else {
                    Err(anyhow::anyhow!(
                        "KEYWARD_SUPPORT_URL must start with https:// or http://, got {url:?}"
                    ))
                }
            })
            .transpose()?;
        let support_email = given(&settings.support_email)
            .map(|email| {
                email
                    .parse::<lettre::Address>()
                    .map(|_| email.clone())
                    .with_context(|| {
                        format!("KEYWARD_SUPPORT_EMAIL must be an email address, got {email:?}")
                    })
            })
            .transpose()?;
        let mail_sender_name =
            given(&settings.mail_sender_name).unwrap_or_else(|| product_name.clone());
        Ok(Self {
            product_name,
            logo,
            accent,
            support_url,
            support_email,
            mail_sender_name,
        })
    }

    /// The product name, lowercased: the "name of this service" a password must not be
    /// built from.
    pub fn service_name(&self) -> String {
        self.product_name.to_lowercase()
    }

    /// The end of every email: where to get help, when the operator said so.
    pub fn email_signature(&self) -> String {
        let contacts: Vec<&str> = [&self.support_url, &self.support_email]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if contacts.is_empty() {
            return String::new();
        }
        format!(
            "\n-- \nNeed help with {}? {}\n",
            self.product_name,
            contacts.join(" · ")
        )
    }

    /// The logo's address for `<img src>`.
    pub fn logo_src(&self) -> Option<String> {
        match &self.logo {
            None => None,
            Some(Logo::File { version, .. }) => Some(format!("{LOGO_PATH}?v={version}")),
            Some(Logo::Url(url)) => Some(url.clone()),
        }
    }

    /// The generated stylesheet (`/brand.css`): the accent's custom properties for the
    /// light scheme (the dark scheme keeps Keyward's palette, whose accent must be light).
    pub fn stylesheet(&self) -> String {
        let Some(accent) = self.accent else {
            return "/* Keyward's own palette (KEYWARD_ACCENT_COLOR is not set). */\n".into();
        };
        let black = Rgb(0, 0, 0);
        let white = Rgb(0xff, 0xff, 0xff);
        let soft = accent.mix(white, 0.9);
        // Text on the soft tint (the current page in the navigation, badges): darkened
        // until it reads at AA.
        let mut text = accent;
        let mut t = 0.0;
        while contrast(text, soft) < WCAG_AA_NORMAL_TEXT && t < 1.0 {
            t += 0.05;
            text = accent.mix(black, t);
        }
        format!(
            "/* Branding: KEYWARD_ACCENT_COLOR={accent} */\n\
             @media (prefers-color-scheme: light), (prefers-color-scheme: no-preference) {{\n\
             \x20 :root {{\n\
             \x20   --accent: {accent};\n\
             \x20   --accent-hover: {hover};\n\
             \x20   --accent-soft: {soft};\n\
             \x20   --accent-text: {text};\n\
             \x20   --focus: {accent};\n\
             \x20 }}\n\
             }}\n",
            accent = accent.hex(),
            hover = accent.mix(black, 0.15).hex(),
            soft = soft.hex(),
            text = text.hex(),
        )
    }

    /// Changes with the stylesheet, so browsers fetch a new one (`/brand.css?v=`).
    pub fn stylesheet_version(&self) -> String {
        short_digest(self.stylesheet().as_bytes())
    }

    /// The favicon: the logo file when there is one, else a key on the accent colour.
    pub fn favicon(&self) -> (&'static str, Vec<u8>) {
        if let Some(Logo::File {
            bytes,
            content_type,
            ..
        }) = &self.logo
        {
            return (*content_type, bytes.to_vec());
        }
        let fill = self.accent.unwrap_or(DEFAULT_ACCENT).hex();
        let svg = format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" fill="{fill}"/><circle cx="12" cy="16" r="5.5" fill="none" stroke="#fff" stroke-width="3"/><path d="M17.5 16H27M23 16v4.5M26 16v3.5" fill="none" stroke="#fff" stroke-width="3" stroke-linecap="round"/></svg>"##
        );
        ("image/svg+xml", svg.into_bytes())
    }

    /// Changes with the favicon (`/favicon.ico?v=`).
    pub fn favicon_version(&self) -> String {
        match &self.logo {
            Some(Logo::File { version, .. }) => version.clone(),
            _ => short_digest(&self.favicon().1),
        }
    }
}

fn short_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..6])
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let authority = authority
        .strip_suffix(default_port)
        .unwrap_or(authority)
        .to_ascii_lowercase();
    Some(format!("{scheme}://{authority}"))
}

/// A logo is a URL on Keyward's own origin (`https://keys.acme.com/assets/logo.svg`) or a
/// file on disk, which Keyward then serves.
fn resolve_logo(logo: &str, base_url: &str) -> anyhow::Result<Logo> {
    if logo.contains("://") || logo.starts_with("//") {
        let own = origin(base_url).context("KEYWARD_BASE_URL has no origin")?;
        return match origin(logo) {
            Some(o) if o == own => Ok(Logo::Url(logo.to_string())),
            other => bail!(
                "KEYWARD_LOGO {logo} is not on Keyward's own origin ({own}, from KEYWARD_BASE_URL) but on {}: \
                 the Content-Security-Policy lets pages show images from their own origin only. \
                 Give the path of the image file instead, and Keyward serves it.",
                other.unwrap_or_else(|| "another origin".into())
            ),
        };
    }
    let path = std::path::Path::new(logo);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let content_type = match ext.as_str() {
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        _ => bail!(
            "KEYWARD_LOGO {logo}: use an .svg, .png, .jpg, .webp, .gif or .ico file (or a URL on Keyward's own origin)"
        ),
    };
    let bytes = std::fs::read(path).with_context(|| format!("KEYWARD_LOGO: reading {logo}"))?;
    if bytes.len() > MAX_LOGO_BYTES {
        bail!(
            "KEYWARD_LOGO {logo} is {} bytes; at most {MAX_LOGO_BYTES} are served",
            bytes.len()
        );
    }
    Ok(Logo::File {
        version: short_digest(&bytes),
        bytes: bytes.into(),
        content_type,
    })
}

// ------------------------------------------------------------------ the request's branding

tokio::task_local! {
    static CURRENT: Arc<Branding>;
}

static DEFAULT: LazyLock<Arc<Branding>> = LazyLock::new(|| Arc::new(Branding::default()));

/// The branding of the deployment serving this request (Keyward's own outside a request).
pub fn current() -> Arc<Branding> {
    CURRENT
        .try_with(Arc::clone)
        .unwrap_or_else(|_| DEFAULT.clone())
}

/// Middleware: the deployment's branding for [`current`] while the request is handled
/// (pages are rendered inside it, error pages included).
pub async fn scope(State(state): State<AppState>, req: Request, next: Next) -> Response {
    CURRENT
        .scope(state.config.branding.clone(), next.run(req))
        .await
}

/// `GET /brand.css`.
pub async fn stylesheet(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        state.config.branding.stylesheet(),
    )
        .into_response()
}

/// `GET /favicon.ico`.
pub async fn favicon(State(state): State<AppState>) -> Response {
    let (content_type, bytes) = state.config.branding.favicon();
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// `GET /brand/logo`: the logo file (404 when the logo is not a file).
pub async fn logo(State(state): State<AppState>) -> Response {
    match &state.config.branding.logo {
        Some(Logo::File {
            bytes,
            content_type,
            ..
        }) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            bytes.to_vec(),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(accent: &str) -> BrandSettings {
        BrandSettings {
            accent_color: Some(accent.into()),
            ..BrandSettings::default()
        }
    }

    #[test]
    fn colours_parse_in_long_and_short_hex() {
        assert_eq!(Rgb::parse("#1a73e8"), Some(Rgb(0x1a, 0x73, 0xe8)));
        assert_eq!(Rgb::parse("1A73E8"), Some(Rgb(0x1a, 0x73, 0xe8)));
        assert_eq!(Rgb::parse("#18e"), Some(Rgb(0x11, 0x88, 0xee)));
        assert_eq!(Rgb::parse("#1a73e"), None);
        assert_eq!(Rgb::parse("blue"), None);
        assert_eq!(Rgb::parse("#gggggg"), None);
    }

    #[test]
    fn contrast_matches_the_wcag_reference_values() {
        let white = Rgb(255, 255, 255);
        assert!((contrast(Rgb(0, 0, 0), white) - 21.0).abs() < 1e-9);
        assert!((contrast(white, white) - 1.0).abs() < 1e-9);
        // #767676 on white is the classic just-passing grey: 4.54:1.
        assert_eq!(ratio_text(contrast(Rgb(0x76, 0x76, 0x76), white)), "4.54:1");
        // Keyward's own accent passes.
        assert!(check_accent(DEFAULT_ACCENT).is_ok());
    }

    #[test]
    fn a_light_accent_is_refused_naming_the_variable_the_colour_and_the_ratio() {
        let err = Branding::resolve(&settings("#ffcc00"), "http://localhost")
            .unwrap_err()
            .to_string();
        assert!(err.contains("KEYWARD_ACCENT_COLOR"), "{err}");
        assert!(err.contains("#ffcc00"), "{err}");
        assert!(err.contains("1.51:1"), "{err}");
        assert!(err.contains("white text of buttons"), "{err}");
        assert!(err.contains("4.5:1"), "{err}");
    }

    #[test]
    fn an_accent_just_dark_enough_for_white_text_must_also_read_on_the_page_background() {
        // #1a73e8: 4.50:1 with white, 4.23:1 on #f6f8fa.
        let err = check_accent(Rgb(0x1a, 0x73, 0xe8)).unwrap_err().to_string();
        assert!(err.contains("#1a73e8"), "{err}");
        assert!(err.contains("page background"), "{err}");
        assert!(err.contains("4.23:1"), "{err}");
    }

    #[test]
    fn a_dark_enough_accent_is_accepted_and_styles_the_light_scheme() {
        let b = Branding::resolve(&settings("#1967D2"), "http://localhost").unwrap();
        assert_eq!(b.accent, Some(Rgb(0x19, 0x67, 0xd2)));
        let css = b.stylesheet();
        assert!(css.contains("--accent: #1967d2;"), "{css}");
        assert!(css.contains("prefers-color-scheme: light"), "{css}");
    }

    #[test]
    fn the_text_on_the_soft_tint_reads_at_aa() {
        for hex in ["#1967d2", "#4f46e5", "#0f766e", "#b91c1c", "#6b21a8"] {
            let b = Branding::resolve(&settings(hex), "http://localhost").unwrap();
            let css = b.stylesheet();
            let value = |name: &str| {
                let start = css.find(&format!("{name}: ")).unwrap() + name.len() + 2;
                Rgb::parse(&css[start..start + 7]).unwrap()
            };
            assert!(
                contrast(value("--accent-text"), value("--accent-soft")) >= WCAG_AA_NORMAL_TEXT,
                "{hex}: {css}"
            );
        }
    }

    #[test]
    fn an_accent_that_is_not_a_colour_is_refused() {
        let err = Branding::resolve(&settings("blue"), "http://localhost")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KEYWARD_ACCENT_COLOR must be a hex colour"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_keywards_name_and_palette() {
        let b = Branding::resolve(&BrandSettings::default(), "http://localhost").unwrap();
        assert_eq!(b.product_name, "Keyward");
        assert_eq!(b.mail_sender_name, "Keyward");
        assert!(b.accent.is_none() && b.logo.is_none());
        assert!(!b.stylesheet().contains("--accent"));
    }

    #[test]
    fn the_sender_name_defaults_to_the_product_name() {
        let b = Branding::resolve(
            &BrandSettings {
                product_name: Some(" Acme API ".into()),
                ..BrandSettings::default()
            },
            "http://localhost",
        )
        .unwrap();
        assert_eq!(b.product_name, "Acme API");
        assert_eq!(b.mail_sender_name, "Acme API");
        assert_eq!(b.service_name(), "acme api");
    }

    #[test]
    fn a_logo_url_on_another_origin_is_refused() {
        let logo = |url: &str| {
            Branding::resolve(
                &BrandSettings {
                    logo: Some(url.into()),
                    ..BrandSettings::default()
                },
                "https://keys.acme.com",
            )
        };
        let err = logo("https://cdn.example.net/logo.svg")
            .unwrap_err()
            .to_string();
        assert!(err.contains("KEYWARD_LOGO"), "{err}");
        assert!(err.contains("https://cdn.example.net"), "{err}");
        assert!(err.contains("https://keys.acme.com"), "{err}");
        assert!(
            logo("http://keys.acme.com/logo.svg").is_err(),
            "scheme differs"
        );
        assert!(logo("//cdn.example.net/logo.svg").is_err());
        assert!(logo("https://keys.acme.com.evil.net/logo.svg").is_err());
        assert!(logo("https://user@keys.acme.com/logo.svg").is_err());
        let ok = logo("https://keys.acme.com:443/assets/logo.svg").unwrap();
        assert_eq!(
            ok.logo_src().as_deref(),
            Some("https://keys.acme.com:443/assets/logo.svg")
        );
    }

    #[test]
    fn a_logo_file_is_served_and_becomes_the_favicon() {
        let path = std::env::temp_dir().join(format!("kw-logo-{}.svg", uuid::Uuid::new_v4()));
        std::fs::write(&path, "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
        let b = Branding::resolve(
            &BrandSettings {
                logo: Some(path.display().to_string()),
                ..BrandSettings::default()
            },
            "http://localhost",
        )
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(b.logo_src().unwrap().starts_with("/brand/logo?v="));
        let (content_type, bytes) = b.favicon();
        assert_eq!(content_type, "image/svg+xml");
        assert!(bytes.starts_with(b"<svg"));
    }

    #[test]
    fn a_logo_of_an_unknown_type_or_missing_file_is_refused() {
        let logo = |path: &str| {
            Branding::resolve(
                &BrandSettings {
                    logo: Some(path.into()),
                    ..BrandSettings::default()
                },
                "http://localhost",
            )
        };
        assert!(logo("/etc/passwd").is_err());
        assert!(logo("/nonexistent/logo.png").is_err());
    }

    #[test]
    fn without_a_logo_the_favicon_is_a_key_on_the_accent() {
        let b = Branding::resolve(&settings("#0f766e"), "http://localhost").unwrap();
        let (content_type, svg) = b.favicon();
        assert_eq!(content_type, "image/svg+xml");
        assert!(String::from_utf8(svg).unwrap().contains("fill=\"#0f766e\""));
    }

    #[test]
    fn outside_a_request_the_branding_is_keywards() {
        assert_eq!(current().product_name, "Keyward");
    }
}
