//! Sticky sessions: which cookie value pins a client to which backend, and the `Set-Cookie`
//! values that pin it, all built once per upstream so a request only does a hash lookup.

use std::sync::Arc;

use http::HeaderValue;
use rustc_hash::FxHashMap;

use super::member::{Member, MemberIndex};

/// The sticky-cookie index of one upstream; empty when the service is not sticky.
#[derive(Default)]
pub struct Sticky {
    by_cookie: FxHashMap<Box<[u8]>, MemberIndex>,
    /// `Set-Cookie` values, aligned with the upstream's members.
    set_cookies: Box<[HeaderValue]>,
}

impl Sticky {
    pub fn new(cookie_name: Option<&str>, members: &[Arc<Member>]) -> Sticky {
        let Some(name) = cookie_name else {
            return Sticky::default();
        };
        let ids: Vec<String> = members.iter().map(|m| m.cookie_id()).collect();
        Sticky {
            set_cookies: ids
                .iter()
                .map(|id| {
                    HeaderValue::from_str(&format!("{name}={id}; path=/"))
                        .expect("cookie names and ids are validated tokens")
                })
                .collect(),
            by_cookie: ids
                .into_iter()
                .enumerate()
                .map(|(i, id)| (id.into_bytes().into(), i as MemberIndex))
                .collect(),
        }
    }

    /// The member a cookie value names.
    pub fn lookup(&self, cookie_value: &[u8]) -> Option<MemberIndex> {
        self.by_cookie.get(cookie_value).copied()
    }

    /// The `Set-Cookie` value that pins a client to `index`; `None` if not sticky.
    pub fn set_cookie(&self, index: MemberIndex) -> Option<&HeaderValue> {
        self.set_cookies.get(index as usize)
    }
}
