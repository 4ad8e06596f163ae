//! Authentication and authorisation.
//!
//! Off by default. When tokens or a JWT secret are configured, every request
//! needs a token (`Authorization: Bearer T`, or `?token=T` for browsers'
//! EventSource and WebSocket, which cannot send headers). A token carries
//! two pattern lists: what it may publish and what it may subscribe to.
//!
//! A subscription pattern is allowed when one of the token's subscribe
//! patterns **covers** it: every name the requested pattern can match, the
//! allowed one matches too (`orders.>` covers `orders.*.paid`; `orders.*`
//! does not cover `orders.>`).
//!
//! Static tokens are compared in constant time (as SHA-256 digests, every
//! configured token looked at). HS256 JWTs must carry `exp` unless
//! `auth.jwt_require_exp = false`; `nbf` is checked, and `iss` and `aud`
//! when configured, all with `auth.jwt_leeway_secs` of clock skew.
//!
//! Each principal has an idempotency-key **namespace**: the JWT's `sub`,
//! a static token's `name` (or a hash of the token), or `anonymous`. Keys
//! of different namespaces never meet.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tidings_core::name::PatternToken;
use tidings_core::Pattern;

use crate::config::AuthConfig;
use crate::service::ServiceError;

/// What a request may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Who (the token's JWT `sub`, the static token's name, `anonymous`).
    pub name: String,
    /// The idempotency-key namespace (see the module docs).
    pub namespace: String,
    /// When the token stops being valid (JWT `exp`); a WebSocket or SSE
    /// connection opened with it is closed then.
    pub expires: Option<DateTime<Utc>>,
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
}

impl Principal {
    /// Allowed everything (auth off).
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            namespace: "anonymous".into(),
            expires: None,
            publish: vec![Pattern::all()],
            subscribe: vec![Pattern::all()],
        }
    }

    fn from_lists(
        name: String,
        namespace: String,
        publish: &[String],
        subscribe: &[String],
    ) -> Result<Principal, ServiceError> {
        let parse = |v: &[String]| -> Result<Vec<Pattern>, ServiceError> {
            v.iter()
                .map(|p| {
                    Pattern::parse(p).map_err(|e| {
                        ServiceError::unauthenticated(format!(
                            "token carries an invalid pattern: {e}"
                        ))
                    })
                })
                .collect()
        };
        Ok(Principal {
            name,
            namespace,
            expires: None,
            publish: parse(publish)?,
            subscribe: parse(subscribe)?,
        })
    }

    /// Refused unless the token may publish `name`.
    pub fn check_publish(&self, name: &str) -> Result<(), ServiceError> {
        if self.publish.iter().any(|p| p.matches(name)) {
            Ok(())
        } else {
            Err(ServiceError::forbidden(format!(
                "this token may not publish {name:?}"
            )))
        }
    }

    /// Refused unless the token may subscribe to `pattern`.
    pub fn check_subscribe(&self, pattern: &Pattern) -> Result<(), ServiceError> {
        if self.may_subscribe(pattern) {
            Ok(())
        } else {
            Err(ServiceError::forbidden(format!(
                "this token may not subscribe to {:?}",
                pattern.as_str()
            )))
        }
    }

    /// True if the token may subscribe to `pattern`.
    pub fn may_subscribe(&self, pattern: &Pattern) -> bool {
        self.subscribe
            .iter()
            .any(|a| covers(a.tokens(), pattern.tokens()))
    }

    /// True if the token may read events named `name`.
    pub fn may_read(&self, name: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(name))
    }
}

/// True if every name matched by `requested` is matched by `allowed`.
pub fn covers(allowed: &[PatternToken], requested: &[PatternToken]) -> bool {
    use PatternToken::*;
    match (allowed.first(), requested.first()) {
        (None, None) => true,
        (Some(Rest), Some(_)) => true,
        (Some(One), Some(Literal(_) | One)) => covers(&allowed[1..], &requested[1..]),
        (Some(Literal(a)), Some(Literal(r))) => a == r && covers(&allowed[1..], &requested[1..]),
        _ => false,
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

/// A static token, kept only as its digest.
struct StaticToken {
    digest: [u8; 32],
    namespace: String,
    publish: Vec<String>,
    subscribe: Vec<String>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Checks tokens.
pub struct Auth {
    tokens: Vec<StaticToken>,
    jwt: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)>,
}

impl Auth {
    /// From the settings.
    pub fn new(config: &AuthConfig) -> Auth {
        let jwt = config.jwt_secret.as_ref().map(|secret| {
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            v.required_spec_claims.clear();
            if config.jwt_require_exp {
                v.required_spec_claims.insert("exp".into());
            }
            v.validate_exp = true;
            v.validate_nbf = true;
            v.leeway = config.jwt_leeway_secs;
            match &config.jwt_issuer {
                Some(iss) => {
                    v.set_issuer(&[iss]);
                    v.required_spec_claims.insert("iss".into());
                }
                None => v.iss = None,
            }
            match &config.jwt_audience {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    v.required_spec_claims.insert("aud".into());
                }
                None => v.validate_aud = false,
            }
            (jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()), v)
        });
        let tokens = config
            .tokens
            .iter()
            .map(|t| {
                let digest = digest(&t.token);
                let namespace = match &t.name {
                    Some(n) => format!("token:{n}"),
                    None => {
                        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                        format!("token:{hex}")
                    }
                };
                StaticToken {
                    digest,
                    namespace,
                    publish: t.publish.clone(),
                    subscribe: t.subscribe.clone(),
                }
            })
            .collect();
        Auth { tokens, jwt }
    }

    /// True if requests need a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// Who presents `token` (refused if auth is on and it is missing or bad).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, ServiceError> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let token = token.ok_or_else(|| {
            ServiceError::unauthenticated(
                "authentication is required: send Authorization: Bearer <token> or ?token=<token>",
            )
        })?;
        // Every configured token is compared, in constant time, so the
        // answer's timing says nothing about which bytes matched.
        let presented = digest(token);
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.digest.ct_eq(&presented)) {
                found = Some(t);
            }
        }
        if let Some(t) = found {
            return Principal::from_lists(
                "token".into(),
                t.namespace.clone(),
                &t.publish,
                &t.subscribe,
            );
        }
        if let Some((key, validation)) = &self.jwt {
            return match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => {
                    let c = data.claims;
                    // Keys live in the subject's namespace; a token with no
                    // subject gets one of its scope, so tokens with other
                    // rights never share (or block) each other's keys.
                    let (name, namespace) = match c.sub {
                        Some(sub) => (sub.clone(), format!("sub:{sub}")),
                        None => {
                            let scope = format!("{:?}{:?}", c.publish, c.subscribe);
                            let hash: String = digest(&scope)[..12]
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            ("jwt".to_owned(), format!("scope:{hash}"))
                        }
                    };
                    let mut p = Principal::from_lists(name, namespace, &c.publish, &c.subscribe)?;
                    p.expires = c.exp.and_then(|s| DateTime::from_timestamp(s, 0));
                    Ok(p)
                }
                Err(e) => Err(ServiceError::unauthenticated(format!("invalid token: {e}"))),
            };
        }
        Err(ServiceError::unauthenticated("unknown token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use crate::service::ErrorKind;

    fn cov(a: &str, r: &str) -> bool {
        covers(
            Pattern::parse(a).unwrap().tokens(),
            Pattern::parse(r).unwrap().tokens(),
        )
    }

    #[test]
    fn coverage() {
        assert!(cov(">", "anything.*"));
        assert!(cov("*", "a.b.>"), "a lone * is everything");
        assert!(cov("orders.>", "orders.*.paid"));
        assert!(cov("orders.>", "orders.>"));
        assert!(cov("orders.*", "orders.paid"));
        assert!(cov("orders.*", "orders.*"));
        assert!(!cov("orders.*", "orders.>"));
        assert!(!cov("orders.*", "orders.a.b"));
        assert!(!cov("orders.paid", "orders.*"));
        assert!(!cov("orders.>", "orders"));
        assert!(!cov("a.b", "a.c"));
    }

    #[test]
    fn static_tokens_and_jwts() {
        let auth = Auth::new(&AuthConfig {
            tokens: vec![TokenConfig {
                token: "t1".into(),
                name: None,
                publish: vec!["orders.>".into()],
                subscribe: vec!["orders.*".into()],
            }],
            jwt_secret: Some("secret".into()),
            jwt_require_exp: false,
            ..AuthConfig::default()
        });
        assert!(auth.enabled());
        assert_eq!(
            auth.authenticate(None).unwrap_err().kind,
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(Some("nope")).unwrap_err().kind,
            ErrorKind::Unauthenticated
        );
        let p = auth.authenticate(Some("t1")).unwrap();
        assert!(p.check_publish("orders.paid").is_ok());
        assert_eq!(
            p.check_publish("users.new").unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert!(p
            .check_subscribe(&Pattern::parse("orders.paid").unwrap())
            .is_ok());
        assert!(p
            .check_subscribe(&Pattern::parse("orders.>").unwrap())
            .is_err());

        let claims = serde_json::json!({"sub": "ann", "publish": ["chat.>"], "subscribe": [">"]});
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let p = auth.authenticate(Some(&jwt)).unwrap();
        assert_eq!(p.name, "ann");
        assert!(p.check_publish("chat.room.1").is_ok());
        let forged = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(
            auth.authenticate(Some(&forged)).unwrap_err().kind,
            ErrorKind::Unauthenticated
        );
    }

    #[test]
    fn auth_off_allows_everything() {
        let auth = Auth::new(&AuthConfig::default());
        let p = auth.authenticate(None).unwrap();
        assert!(p.check_publish("x").is_ok());
        assert!(p.check_subscribe(&Pattern::all()).is_ok());
    }

    fn jwt(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap()
    }

    #[test]
    fn jwt_claims_are_checked() {
        let now = chrono::Utc::now().timestamp();
        let base = AuthConfig {
            jwt_secret: Some("k".into()),
            ..AuthConfig::default()
        };
        let auth = Auth::new(&base);
        let refused = |auth: &Auth, c: serde_json::Value| {
            auth.authenticate(Some(&jwt(c))).unwrap_err().message
        };
        // exp is required by default.
        let e = refused(&auth, serde_json::json!({"sub": "a", "subscribe": [">"]}));
        assert!(e.contains("exp") || e.contains("Missing"), "{e}");
        // Expired beyond the leeway.
        refused(&auth, serde_json::json!({"sub": "a", "exp": now - 3600}));
        // Not yet valid.
        refused(
            &auth,
            serde_json::json!({"sub": "a", "exp": now + 3600, "nbf": now + 600}),
        );
        let ok = auth
            .authenticate(Some(&jwt(
                serde_json::json!({"sub": "a", "exp": now + 3600, "nbf": now - 5}),
            )))
            .unwrap();
        assert_eq!(ok.namespace, "sub:a");
        assert_eq!(ok.expires.unwrap().timestamp(), now + 3600);
        // Within the leeway, an expired token still passes.
        assert!(auth
            .authenticate(Some(&jwt(serde_json::json!({"sub": "a", "exp": now - 5}))))
            .is_ok());

        let strict = Auth::new(&AuthConfig {
            jwt_issuer: Some("https://issuer".into()),
            jwt_audience: Some("tidings".into()),
            ..base.clone()
        });
        let good = serde_json::json!({"sub": "a", "exp": now + 60, "iss": "https://issuer", "aud": "tidings"});
        assert!(strict.authenticate(Some(&jwt(good))).is_ok());
        refused(
            &strict,
            serde_json::json!({"sub": "a", "exp": now + 60, "iss": "https://other", "aud": "tidings"}),
        );
        refused(
            &strict,
            serde_json::json!({"sub": "a", "exp": now + 60, "iss": "https://issuer", "aud": "else"}),
        );
        refused(&strict, serde_json::json!({"sub": "a", "exp": now + 60}));

        let relaxed = Auth::new(&AuthConfig {
            jwt_require_exp: false,
            ..base
        });
        assert!(relaxed
            .authenticate(Some(&jwt(serde_json::json!({"sub": "a"}))))
            .is_ok());

        // No subject: the namespace follows the token's rights.
        let ns = |claims| relaxed.authenticate(Some(&jwt(claims))).unwrap().namespace;
        let a = ns(serde_json::json!({"publish": ["a.>"], "subscribe": ["a.>"]}));
        let b = ns(serde_json::json!({"publish": ["b.>"], "subscribe": ["b.>"]}));
        assert_ne!(a, b, "other rights, other keys");
        assert_eq!(
            a,
            ns(serde_json::json!({"publish": ["a.>"], "subscribe": ["a.>"]}))
        );
        assert!(a.starts_with("scope:"), "{a}");
    }

    #[test]
    fn static_token_namespaces_differ_and_never_show_the_token() {
        let auth = Auth::new(&AuthConfig {
            tokens: vec![
                TokenConfig {
                    token: "alpha".into(),
                    name: None,
                    publish: vec![">".into()],
                    subscribe: vec![">".into()],
                },
                TokenConfig {
                    token: "beta".into(),
                    name: Some("billing".into()),
                    publish: vec![">".into()],
                    subscribe: vec![">".into()],
                },
            ],
            ..AuthConfig::default()
        });
        let a = auth.authenticate(Some("alpha")).unwrap();
        let b = auth.authenticate(Some("beta")).unwrap();
        assert_ne!(a.namespace, b.namespace);
        assert!(!a.namespace.contains("alpha"));
        assert_eq!(b.namespace, "token:billing");
        assert!(auth.authenticate(Some("alph")).is_err());
    }
}
