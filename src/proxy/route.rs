//! One request's routing state: the service it was routed to, the backend it is on (counted
//! in flight there), the backends it already failed on, and the retry decisions.

use std::sync::Arc;
use std::time::Instant;

use crate::table::member::MemberIndex;
use crate::table::upstream::Upstream;

pub struct Route {
    pub upstream: Arc<Upstream>,
    /// The backend the request is on; it counts in that backend's in-flight requests.
    member: Option<MemberIndex>,
    /// Backends this request failed on: a retry never goes back to one while another is
    /// routable.
    pub tried: Vec<MemberIndex>,
    /// The request's sticky cookie already names the serving backend.
    pub sticky_hit: bool,
    pub upstream_started: Option<Instant>,
    /// The backend's response header arrived (so the response body is the backend's).
    pub upstream_responded: bool,
}

impl Route {
    pub fn new(upstream: Arc<Upstream>) -> Route {
        upstream.series.open.inc();
        upstream.record_request();
        Route {
            upstream,
            member: None,
            tried: Vec::new(),
            sticky_hit: false,
            upstream_started: None,
            upstream_responded: false,
        }
    }

    pub fn member(&self) -> Option<MemberIndex> {
        self.member
    }

    /// Puts the request on `index`, which the upstream has already counted in flight.
    pub fn assign(&mut self, index: MemberIndex) {
        self.release();
        self.member = Some(index);
    }

    fn release(&mut self) {
        if let Some(old) = self.member.take() {
            self.upstream.release(old);
        }
    }

    /// The current backend failed this request before answering: remember it, and say
    /// whether another backend takes the request (within `retries`, and the retry budget
    /// unless the failure is [`Failure::Refused`], and one is routable). A request that is not
    /// retried stays on its backend for the log.
    pub fn fail_current(&mut self, failure: Failure) -> bool {
        let Some(failed) = self.member else {
            return false;
        };
        self.tried.push(failed);
        let retry = self.tried.len() <= self.upstream.policy.retries as usize
            && self.upstream.has_routable_besides(&self.tried)
            && (failure == Failure::Refused || self.upstream.try_retry());
        if retry {
            self.upstream.series.retries.inc();
            self.release();
        }
        retry
    }

    /// Records a failure of the current backend for passive health.
    pub fn observe_failure(&self, why: &str) {
        if let Some(index) = self.member {
            self.upstream.observe_failure(index, why);
        }
    }
}

/// How a backend failed a request, for the retry budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The backend's host refused the connection: nothing listens there (a process that just
    /// died, a container stopping before berth hears of it). The request reached nothing and
    /// cost nothing, so retrying it elsewhere cannot add to an overload: it spends no budget.
    /// Without this, a backend that dies under load would turn the budget's cap into 502s
    /// for every request sent its way until the probe or Docker's event takes it out.
    Refused,
    /// Anything else (connect timeout, reset, timeout, a status in `retry_on`): the retry may
    /// add work to a struggling service, so it spends the budget.
    Other,
}

impl Drop for Route {
    fn drop(&mut self) {
        self.release();
        self.upstream.series.open.dec();
    }
}
