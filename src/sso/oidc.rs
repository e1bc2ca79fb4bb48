//! The OpenID Connect relying party, on the `openidconnect` crate: discovery (cached),
//! the authorization request (code flow, PKCE S256, state, nonce), and the callback's
//! checks — RFC 9207 `iss`, the token exchange, and full ID token validation.

use std::{sync::Arc, time::Duration};

use openidconnect::{
    AdditionalProviderMetadata, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret,
    CsrfToken, IssuerUrl, LoginHint, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope, TokenResponse,
    core::{
        CoreAuthDisplay, CoreAuthPrompt, CoreClaimName, CoreClaimType, CoreClient,
        CoreClientAuthMethod, CoreGrantType, CoreIdToken, CoreIdTokenClaims, CoreIdTokenVerifier,
        CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
        CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
        CoreSubjectIdentifierType, CoreUserInfoClaims,
    },
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::SsoFailure;

/// An outbound request refused, or failed.
#[derive(Debug, thiserror::Error)]
pub enum GuardedError {
    #[error("{0}")]
    Blocked(String),
    #[error(transparent)]
    Http(#[from] openidconnect::HttpClientError<reqwest::Error>),
}

/// The HTTP client `openidconnect` calls: for untrusted sources each request's URL is
/// checked against [`crate::net::check_outbound`] first (IP literals included).
pub struct Guarded<'a> {
    http: &'a reqwest::Client,
    check: bool,
    allow_private: bool,
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Guarded<'_> {
    type Error = GuardedError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, GuardedError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, req: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            if self.check {
                crate::net::check_outbound(&req.uri().to_string(), self.allow_private)
                    .await
                    .map_err(GuardedError::Blocked)?;
            }
            Ok(self.http.call(req).await?)
        })
    }
}

/// Provider metadata fields beyond the core set that the callback checks.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    /// RFC 9207: the provider puts `iss` on its authorization responses.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 8414 / 7636: the PKCE methods the provider accepts, when it says.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// ID token signature algorithms accepted: asymmetric only, never `none` or a shared-secret
/// HMAC (which would let anyone holding the key material the provider publishes sign).
pub const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Tolerated difference between our clock and the provider's for `iat`.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(2);
/// How long discovered metadata (and its signing keys) is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(600);

/// The three things that identify a client at a provider.
#[derive(Clone)]
pub struct ClientParams {
    pub issuer: String,
    /// Configured by the operator (may live on a private network), not by an organization.
    pub trusted: bool,
    pub client_id: String,
    pub client_secret: SecretString,
}

/// What the provider vouched for, after every check passed.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// The secrets of one sign-in attempt, kept in the browser's session until its callback.
#[derive(Clone, Serialize, Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub issuer: String,
}

/// The relying party: HTTP clients that follow no redirects, and a discovery cache.
#[derive(Clone)]
pub struct Oidc {
    /// For operator-configured providers.
    http: reqwest::Client,
    /// For organizations' issuers: every request (discovery, keys, token, UserInfo — URLs
    /// the provider's metadata chooses) is checked and resolves to public addresses only.
    http_public: reqwest::Client,
    allow_private_networks: bool,
    cache: moka::sync::Cache<String, Arc<Metadata>>,
}

impl Oidc {
    pub fn new(allow_private_networks: bool) -> anyhow::Result<Self> {
        Ok(Self {
            allow_private_networks,
            http_public: crate::net::user_url_client(
                allow_private_networks,
                concat!("keyward/", env!("CARGO_PKG_VERSION")),
            )?,
            http: reqwest::Client::builder()
                // Redirects would let a provider's answer point us anywhere (SSRF).
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .connect_timeout(Duration::from_secs(5))
                .user_agent(concat!("keyward/", env!("CARGO_PKG_VERSION")))
                .build()?,
            cache: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(DISCOVERY_TTL)
                .build(),
        })
    }

    /// Fetches (or reuses) the provider's metadata and keys. The metadata's `issuer` must
    /// equal the configured one exactly (mix-up protection).
    /// `trusted`: an operator-configured provider (which may be on a private network);
    /// otherwise every request goes through the public-address checks.
    pub async fn discover(&self, issuer: &str, trusted: bool) -> Result<Arc<Metadata>, SsoFailure> {
        let key = format!("{trusted}:{issuer}");
        if let Some(m) = self.cache.get(&key) {
            return Ok(m);
        }
        let m = Arc::new(self.discover_fresh(issuer, trusted).await?);
        self.cache.insert(key, m.clone());
        Ok(m)
    }

    /// Discovery without the cache (the "Test connection" button and start-up checks).
    pub async fn discover_fresh(
        &self,
        issuer: &str,
        trusted: bool,
    ) -> Result<Metadata, SsoFailure> {
        let url = IssuerUrl::new(issuer.to_string())
            .map_err(|_| SsoFailure::Discovery(format!("{issuer} is not a valid issuer URL")))?;
        Metadata::discover_async(url, &self.client(trusted))
            .await
            .map_err(|e| SsoFailure::Discovery(describe_discovery_error(issuer, &e)))
    }

    /// The HTTP client for a source (see [`Guarded`]).
    fn client(&self, trusted: bool) -> Guarded<'_> {
        if trusted {
            Guarded {
                http: &self.http,
                check: false,
                allow_private: true,
            }
        } else {
            Guarded {
                http: &self.http_public,
                check: true,
                allow_private: self.allow_private_networks,
            }
        }
    }

    async fn discover_for(&self, params: &ClientParams) -> Result<Arc<Metadata>, SsoFailure> {
        self.discover(&params.issuer, params.trusted).await
    }

    /// Drops cached metadata (after a connection's settings change).
    pub fn forget(&self, issuer: &str) {
        self.cache.invalidate(&format!("true:{issuer}"));
        self.cache.invalidate(&format!("false:{issuer}"));
    }

    /// Builds the authorization URL: code flow, PKCE S256, fresh state and nonce.
    pub async fn begin(
        &self,
        params: &ClientParams,
        redirect_uri: &str,
        login_hint: Option<&str>,
        force_login: bool,
    ) -> Result<(String, Pending), SsoFailure> {
        let metadata = self.discover_for(params).await?;
        let client = client(&metadata, params, redirect_uri)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256_len(48);
        let state = random_secret()?;
        let nonce = random_secret()?;
        let (state_for_req, nonce_for_req) = (state.clone(), nonce.clone());
        let mut req = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                move || CsrfToken::new(state_for_req),
                move || Nonce::new(nonce_for_req),
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if let Some(hint) = login_hint {
            req = req.set_login_hint(LoginHint::new(hint.to_string()));
        }
        if force_login {
            req = req.add_prompt(CoreAuthPrompt::Login);
        }
        let (url, _, _) = req.url();
        // The browser is sent to this URL from a page of ours: only a web address may be
        // linked there, never `javascript:`, `data:` or another scheme from the metadata.
        let scheme_ok = match url.scheme() {
            "https" => true,
            "http" => self.allow_private_networks,
            _ => false,
        };
        if !scheme_ok {
            return Err(SsoFailure::Discovery(format!(
                "the provider's authorization endpoint must be an https:// address (it uses {}:)",
                url.scheme()
            )));
        }
        Ok((
            url.to_string(),
            Pending {
                state,
                nonce,
                pkce_verifier: verifier.secret().clone(),
                issuer: params.issuer.clone(),
            },
        ))
    }

    /// Completes a sign-in: checks the RFC 9207 `iss` parameter, exchanges the code (with
    /// the PKCE verifier, client-authenticated), validates the ID token (nonce included)
    /// and, when the ID token has no email, asks the UserInfo endpoint (same subject).
    pub async fn finish(
        &self,
        params: &ClientParams,
        redirect_uri: &str,
        pending: &Pending,
        code: &str,
        iss_param: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<VerifiedIdentity, SsoFailure> {
        let metadata = self.discover_for(params).await?;
        match iss_param {
            Some(iss) if iss != params.issuer => {
                return Err(SsoFailure::IssuerMismatch(format!(
                    "the response came from {iss}, not {}",
                    params.issuer
                )));
            }
            None if metadata
                .additional_metadata()
                .authorization_response_iss_parameter_supported =>
            {
                return Err(SsoFailure::IssuerMismatch(
                    "the response has no iss parameter although the provider sends one".into(),
                ));
            }
            _ => {}
        }
        let client = client(&metadata, params, redirect_uri)?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| SsoFailure::TokenExchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.client(params.trusted))
            .await
            .map_err(|e| SsoFailure::TokenExchange(describe_token_error(&e)))?;
        let id_token = token
            .id_token()
            .ok_or_else(|| SsoFailure::IdToken("the token response has no ID token".into()))?;
        let claims = validate_id_token(
            id_token,
            &params.client_id,
            &params.issuer,
            metadata.jwks(),
            &pending.nonce,
            now,
        )?;
        let mut identity = VerifiedIdentity {
            issuer: params.issuer.clone(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
        };
        if identity.email.is_none() {
            // The subject must match the ID token's (the crate checks it).
            let info: CoreUserInfoClaims = client
                .user_info(token.access_token().clone(), Some(claims.subject().clone()))
                .map_err(|e| SsoFailure::UserInfo(e.to_string()))?
                .request_async(&self.client(params.trusted))
                .await
                .map_err(|e| SsoFailure::UserInfo(e.to_string()))?;
            identity.email = info.email().map(|e| e.to_string());
            identity.email_verified = info.email_verified().unwrap_or(false);
        }
        Ok(identity)
    }
}

fn client(
    metadata: &Metadata,
    params: &ClientParams,
    redirect_uri: &str,
) -> Result<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    SsoFailure,
> {
    let redirect = RedirectUrl::new(redirect_uri.to_string())
        .map_err(|e| SsoFailure::Discovery(format!("bad redirect URI: {e}")))?;
    Ok(CoreClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(params.client_id.clone()),
        Some(ClientSecret::new(
            params.client_secret.expose_secret().to_string(),
        )),
    )
    .set_redirect_uri(redirect))
}

/// Full ID token validation (OpenID Connect Core §3.1.3.7): signature with the provider's
/// published keys and an asymmetric algorithm, `iss` equal to the configured issuer,
/// `aud` containing our client id and nobody else, `azp` (when present) equal to it, not
/// expired, issued neither in the future nor long ago, and `nonce` equal to ours.
pub fn validate_id_token(
    token: &CoreIdToken,
    client_id: &str,
    issuer: &str,
    jwks: &CoreJsonWebKeySet,
    nonce: &str,
    now: OffsetDateTime,
) -> Result<CoreIdTokenClaims, SsoFailure> {
    let issuer_url =
        IssuerUrl::new(issuer.to_string()).map_err(|_| SsoFailure::IdToken("bad issuer".into()))?;
    let now_chrono = to_chrono(now);
    let verifier: CoreIdTokenVerifier<'_> = CoreIdTokenVerifier::new_public_client(
        ClientId::new(client_id.to_string()),
        issuer_url,
        jwks.clone(),
    )
    .set_allowed_algs(ALLOWED_ALGS)
    .set_time_fn(move || now_chrono)
    .set_issue_time_verifier_fn(move |iat| {
        let iat = iat.timestamp();
        if iat > (now + CLOCK_SKEW).unix_timestamp() {
            Err("the ID token was issued in the future".into())
        } else if iat < (now - time::Duration::hours(1)).unix_timestamp() {
            Err("the ID token was issued more than an hour ago".into())
        } else {
            Ok(())
        }
    });
    let expected = Nonce::new(nonce.to_string());
    let claims = token
        .claims(&verifier, &expected)
        .map_err(|e| SsoFailure::IdToken(e.to_string()))?;
    if let Some(azp) = claims.authorized_party()
        && azp.as_str() != client_id
    {
        return Err(SsoFailure::IdToken(format!(
            "the ID token was issued to {} (azp), not to this client",
            azp.as_str()
        )));
    }
    Ok(claims.clone())
}

fn to_chrono(t: OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

/// 128 random bits, base64url.
fn random_secret() -> Result<String, SsoFailure> {
    crate::auth::session::random_token().map_err(|e| SsoFailure::Internal(e.to_string()))
}

fn describe_discovery_error<E: std::error::Error>(
    issuer: &str,
    e: &openidconnect::DiscoveryError<E>,
) -> String {
    use openidconnect::DiscoveryError::*;
    match e {
        Validation(msg) => format!("the provider's metadata does not match {issuer}: {msg}"),
        Request(inner) => format!("{issuer} did not answer: {}", chain(inner)),
        Response(status, _, _) => {
            format!("{issuer}/.well-known/openid-configuration answered HTTP {status}")
        }
        Parse(inner) => format!("the provider's metadata is not valid: {inner}"),
        other => format!("discovery failed: {}", chain(other)),
    }
}

fn describe_token_error<E: std::error::Error>(
    e: &openidconnect::RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> String {
    match e {
        openidconnect::RequestTokenError::ServerResponse(r) => {
            format!("the provider refused the code: {}", r.error())
        }
        other => chain(other),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// ID token validation against tokens this test signs itself: the cases a real provider
/// will not produce (SECURITY.md E.30, E.32).
#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
    use hmac::{Hmac, Mac};
    use openidconnect::{
        Audience, EmptyAdditionalClaims, JsonWebKeyId, PrivateSigningKey, StandardClaims,
        SubjectIdentifier,
        core::{CoreIdTokenClaims, CoreRsaPrivateSigningKey},
    };
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    use sha2::Sha256;

    use super::*;

    const ISS: &str = "https://idp.example";
    const CLIENT: &str = "keyward";
    const NONCE: &str = "the-nonce";

    struct Idp {
        private: rsa::RsaPrivateKey,
        key: CoreRsaPrivateSigningKey,
        public_der: Vec<u8>,
        jwks: CoreJsonWebKeySet,
    }

    fn idp(kid: &str) -> Idp {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = private
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .unwrap()
            .to_string();
        let public_der = private
            .to_public_key()
            .to_pkcs1_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        let key =
            CoreRsaPrivateSigningKey::from_pem(&pem, Some(JsonWebKeyId::new(kid.into()))).unwrap();
        let jwks = CoreJsonWebKeySet::new(vec![key.as_verification_key()]);
        Idp {
            private,
            key,
            public_der,
            jwks,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn claims(iss: &str, aud: &[&str]) -> CoreIdTokenClaims {
        let t = to_chrono(now());
        CoreIdTokenClaims::new(
            IssuerUrl::new(iss.into()).unwrap(),
            aud.iter().map(|a| Audience::new(a.to_string())).collect(),
            t + chrono::Duration::minutes(5),
            t,
            StandardClaims::new(SubjectIdentifier::new("alice".into())),
            EmptyAdditionalClaims {},
        )
        .set_nonce(Some(Nonce::new(NONCE.into())))
    }

    fn sign(idp: &Idp, c: CoreIdTokenClaims) -> CoreIdToken {
        CoreIdToken::new(
            c,
            &idp.key,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            None,
            None,
        )
        .unwrap()
    }

    fn check(idp: &Idp, token: &CoreIdToken) -> Result<CoreIdTokenClaims, SsoFailure> {
        validate_id_token(token, CLIENT, ISS, &idp.jwks, NONCE, now())
    }

    fn raw(token: &CoreIdToken) -> String {
        serde_json::to_value(token)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A token with the given header and the payload of `like`, signed by `sign`.
    fn forge(
        like: &CoreIdToken,
        header: serde_json::Value,
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> CoreIdToken {
        let payload = raw(like).split('.').nth(1).unwrap().to_string();
        let head = B64.encode(header.to_string());
        let input = format!("{head}.{payload}");
        let sig = B64.encode(sign(input.as_bytes()));
        CoreIdToken::from_str(&format!("{input}.{sig}")).unwrap()
    }

    #[test]
    fn id_token_negative_matrix() {
        let a = idp("key-a");
        let good = sign(&a, claims(ISS, &[CLIENT]));
        let ok = check(&a, &good).expect("a good token passes");
        assert_eq!(ok.subject().as_str(), "alice");

        let rejected = |name: &str, t: &CoreIdToken| {
            assert!(check(&a, t).is_err(), "{name} must be rejected");
        };
        rejected(
            "wrong iss",
            &sign(&a, claims("https://evil.example", &[CLIENT])),
        );
        rejected("wrong aud", &sign(&a, claims(ISS, &["someone-else"])));
        rejected(
            "extra untrusted aud",
            &sign(&a, claims(ISS, &[CLIENT, "evil"])),
        );
        rejected(
            "aud with evil and azp=evil",
            &sign(
                &a,
                claims(ISS, &[CLIENT, "evil"])
                    .set_authorized_party(Some(ClientId::new("evil".into()))),
            ),
        );
        rejected(
            "azp is another client",
            &sign(
                &a,
                claims(ISS, &[CLIENT]).set_authorized_party(Some(ClientId::new("evil".into()))),
            ),
        );
        let t = to_chrono(now());
        rejected(
            "expired",
            &sign(
                &a,
                claims(ISS, &[CLIENT]).set_expiration(t - chrono::Duration::seconds(1)),
            ),
        );
        rejected(
            "iat an hour ahead",
            &sign(
                &a,
                claims(ISS, &[CLIENT])
                    .set_issue_time(t + chrono::Duration::hours(1))
                    .set_expiration(t + chrono::Duration::hours(2)),
            ),
        );
        rejected(
            "nonce mismatch",
            &sign(
                &a,
                claims(ISS, &[CLIENT]).set_nonce(Some(Nonce::new("other".into()))),
            ),
        );
        rejected(
            "no nonce",
            &sign(&a, claims(ISS, &[CLIENT]).set_nonce(None)),
        );

        // alg=none, with and without a signature.
        let none = forge(
            &good,
            serde_json::json!({"alg": "none", "kid": "key-a"}),
            |_| vec![],
        );
        rejected("alg=none", &none);
        // HS256 keyed with the provider's public key (the classic key-confusion attack).
        let pk = a.public_der.clone();
        let hs = forge(
            &good,
            serde_json::json!({"alg": "HS256", "kid": "key-a"}),
            move |m| {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&pk).unwrap();
                mac.update(m);
                mac.finalize().into_bytes().to_vec()
            },
        );
        rejected("HS256 with the RSA public key", &hs);
        // Unknown kid: signed by a key the provider never published.
        let stranger = idp("key-x");
        rejected("unknown kid", &sign(&stranger, claims(ISS, &[CLIENT])));
        // One flipped bit in the signature.
        let mut parts: Vec<String> = raw(&good).split('.').map(String::from).collect();
        let mut sig = B64.decode(&parts[2]).unwrap();
        sig[10] ^= 0x01;
        parts[2] = B64.encode(sig);
        rejected(
            "flipped signature bit",
            &CoreIdToken::from_str(&parts.join(".")).unwrap(),
        );
        // A token from provider B (its own issuer and key) at provider A's callback.
        let b = idp("key-b");
        let from_b = sign(&b, claims("https://idp-b.example", &[CLIENT]));
        rejected("token from another provider", &from_b);
        // A `jku` header naming the signer's own key set does not make that key trusted.
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(stranger.private.clone());
        let stranger_jku = forge(
            &good,
            serde_json::json!({"alg": "RS256", "kid": "key-x", "jku": "https://evil.example/jwks"}),
            |m| {
                use rsa::signature::{SignatureEncoding, Signer};
                signer.sign(m).to_vec()
            },
        );
        rejected("jku header", &stranger_jku);
    }
}
