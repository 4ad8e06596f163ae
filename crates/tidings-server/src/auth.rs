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

use serde::Deserialize;
use tidings_core::name::PatternToken;
use tidings_core::Pattern;

use crate::config::{AuthConfig, TokenConfig};
use crate::error::ApiError;

/// What a request may do.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Who (the token's JWT `sub`, `token` for static tokens, `anonymous`).
    pub name: String,
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
}

impl Principal {
    /// Allowed everything (auth off).
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            publish: vec![Pattern::all()],
            subscribe: vec![Pattern::all()],
        }
    }

    fn from_lists(
        name: String,
        publish: &[String],
        subscribe: &[String],
    ) -> Result<Principal, ApiError> {
        let parse = |v: &[String]| -> Result<Vec<Pattern>, ApiError> {
            v.iter()
                .map(|p| {
                    Pattern::parse(p).map_err(|e| {
                        ApiError::unauthorized(format!("token carries an invalid pattern: {e}"))
                    })
                })
                .collect()
        };
        Ok(Principal {
            name,
            publish: parse(publish)?,
            subscribe: parse(subscribe)?,
        })
    }

    /// 403 unless the token may publish `name`.
    pub fn check_publish(&self, name: &str) -> Result<(), ApiError> {
        if self.publish.iter().any(|p| p.matches(name)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token may not publish {name:?}"
            )))
        }
    }

    /// 403 unless the token may subscribe to `pattern`.
    pub fn check_subscribe(&self, pattern: &Pattern) -> Result<(), ApiError> {
        if self
            .subscribe
            .iter()
            .any(|a| covers(a.tokens(), pattern.tokens()))
        {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this token may not subscribe to {:?}",
                pattern.as_str()
            )))
        }
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
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

/// Checks tokens.
pub struct Auth {
    tokens: Vec<TokenConfig>,
    jwt: Option<(jsonwebtoken::DecodingKey, jsonwebtoken::Validation)>,
}

impl Auth {
    /// From the settings.
    pub fn new(config: &AuthConfig) -> Auth {
        let jwt = config.jwt_secret.as_ref().map(|secret| {
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            v.required_spec_claims.clear();
            v.validate_exp = true;
            (jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()), v)
        });
        Auth {
            tokens: config.tokens.clone(),
            jwt,
        }
    }

    /// True if requests need a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt.is_some()
    }

    /// Who presents `token` (401 if auth is on and it is missing or bad).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, ApiError> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let token = token.ok_or_else(|| {
            ApiError::unauthorized(
                "authentication is required: send Authorization: Bearer <token> or ?token=<token>",
            )
        })?;
        if let Some(t) = self.tokens.iter().find(|t| t.token == token) {
            return Principal::from_lists("token".into(), &t.publish, &t.subscribe);
        }
        if let Some((key, validation)) = &self.jwt {
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => {
                    let c = data.claims;
                    return Principal::from_lists(
                        c.sub.unwrap_or_else(|| "jwt".into()),
                        &c.publish,
                        &c.subscribe,
                    );
                }
                Err(e) => return Err(ApiError::unauthorized(format!("invalid token: {e}"))),
            }
        }
        Err(ApiError::unauthorized("unknown token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                publish: vec!["orders.>".into()],
                subscribe: vec!["orders.*".into()],
            }],
            jwt_secret: Some("secret".into()),
        });
        assert!(auth.enabled());
        assert_eq!(auth.authenticate(None).unwrap_err().status, 401);
        assert_eq!(auth.authenticate(Some("nope")).unwrap_err().status, 401);
        let p = auth.authenticate(Some("t1")).unwrap();
        assert!(p.check_publish("orders.paid").is_ok());
        assert_eq!(p.check_publish("users.new").unwrap_err().status, 403);
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
        assert_eq!(auth.authenticate(Some(&forged)).unwrap_err().status, 401);
    }

    #[test]
    fn auth_off_allows_everything() {
        let auth = Auth::new(&AuthConfig::default());
        let p = auth.authenticate(None).unwrap();
        assert!(p.check_publish("x").is_ok());
        assert!(p.check_subscribe(&Pattern::all()).is_ok());
    }
}
