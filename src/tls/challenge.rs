//! ACME HTTP-01 challenges in flight: the CA fetches
//! `http://<domain>/.well-known/acme-challenge/<token>` and expects the key authorization.
//! The ACME manager publishes a token before telling the CA it is ready and removes it once
//! the order is decided; every plain listener answers from here (`crate::proxy`).

use std::collections::HashMap;
use std::sync::RwLock;

/// The path prefix of HTTP-01 challenge requests.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
pub struct Challenges(RwLock<HashMap<String, String>>);

impl Challenges {
    pub fn insert(&self, token: String, key_authorization: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, key_authorization);
    }

    pub fn remove(&self, token: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// The key authorization for the request `path`, if it asks for a token in flight.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PATH)?;
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_published_tokens_are_answered() {
        let challenges = Challenges::default();
        challenges.insert("tok".into(), "tok.thumb".into());
        assert_eq!(
            challenges
                .answer("/.well-known/acme-challenge/tok")
                .as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(challenges.answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(challenges.answer("/tok"), None);
        challenges.remove("tok");
        assert_eq!(challenges.answer("/.well-known/acme-challenge/tok"), None);
    }
}
