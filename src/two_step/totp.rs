//! Authenticator apps (RFC 6238 through `totp-rs`): SHA-1, 6 digits, 30-second steps,
//! one step of clock skew either way. Replay is refused by the store, which accepts each
//! step only once and never an earlier one.

use totp_rs::{Algorithm, Builder, Totp};

/// Seconds per step.
pub const STEP: u64 = 30;
/// Steps accepted before and after the current one.
pub const SKEW: u16 = 1;
/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
const SECRET_BYTES: usize = 20;

/// A fresh random secret.
pub fn new_secret() -> anyhow::Result<Vec<u8>> {
    let mut b = vec![0u8; SECRET_BYTES];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

/// The secret as people type it (RFC 4648 base32, no padding).
pub fn secret_text(secret: &[u8]) -> String {
    totp_rs::Secret::from(secret.to_vec()).to_base32()
}

pub fn secret_from_text(text: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::try_from_base32(text)
        .ok()
        .map(|s| s.as_ref().to_vec())
}

fn totp(secret: &[u8], issuer: &str, account: &str) -> anyhow::Result<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(SKEW)
        .with_step_duration(STEP)
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .map_err(|e| anyhow::anyhow!("TOTP parameters: {e:?}"))
}

/// The step a code belongs to, if it matches the current step or one step either side.
pub fn matching_step(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = u64::try_from(now).ok()?;
    let t = totp(secret, "Keyward", "").ok()?;
    t.check(&code, now).and_then(|s| i64::try_from(s).ok())
}

/// The `otpauth://` URI an app scans.
pub fn otpauth_url(secret: &[u8], issuer: &str, account: &str) -> anyhow::Result<String> {
    totp(secret, issuer, account)?
        .to_url()
        .map_err(|e| anyhow::anyhow!("otpauth URL: {e:?}"))
}

/// A QR code of `text` as an inline SVG (rendered here: no third-party script or image).
pub fn qr_svg(text: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(text.as_bytes())?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B: T = 59 → 94287082 (8 digits); the last 6 digits are ours.
        let secret = b"12345678901234567890";
        assert_eq!(matching_step(secret, "287082", 59), Some(1));
        assert_eq!(
            matching_step(secret, "287082", 59 + 30),
            Some(1),
            "one step late"
        );
        assert_eq!(
            matching_step(secret, "287082", 59 + 60),
            None,
            "two steps late"
        );
        assert_eq!(matching_step(secret, "28708", 59), None);
        assert_eq!(matching_step(secret, "abcdef", 59), None);
    }

    #[test]
    fn secrets_round_trip_as_text() {
        let s = new_secret().unwrap();
        assert_eq!(secret_from_text(&secret_text(&s)).unwrap(), s);
        let url = otpauth_url(&s, "Keyward", "a@b.co").unwrap();
        assert!(url.starts_with("otpauth://totp/"), "{url}");
        assert!(qr_svg(&url).unwrap().contains("<svg"));
    }
}
