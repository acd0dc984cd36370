//! The filter chain: the one trait built-in rules, masking and WebAssembly plugins implement, so
//! every driver asks one place what happens to a request.
//!
//! A filter overrides only the phases it needs; the defaults let everything through. Request
//! filters run first to last and the first refusal wins (deny before hold: a later filter's deny
//! overrides an earlier hold). When nothing refuses, the decision of the last filter that
//! decided is the one journaled — for the built-in chain, the policy's allow with its rule id.
//!
//! Phases today: [`Filter::on_request`] (every driver, before anything is forwarded). Response
//! phases (masking) arrive with the masking issue.

use std::fmt::Debug;

use crate::identity::Principal;
use crate::policy::{Decision, Effect, Policy, Request};

/// What a filter says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No opinion: the next filter decides.
    Continue,
    /// Let it through, for this reason (journaled if no later filter refuses).
    Allow(Decision),
    /// Refuse it.
    Deny(Decision),
    /// Hold it for a human approver.
    Hold(Decision),
}

/// Who asks for what, where.
#[derive(Debug, Clone, Copy)]
pub struct RequestCx<'a> {
    /// Route name.
    pub route: &'a str,
    /// The authenticated caller.
    pub principal: &'a Principal,
}

/// One stage of the chain.
pub trait Filter: Send + Sync + Debug {
    /// Name, for logs and decision records.
    fn name(&self) -> &str;

    /// Runs for every decoded request, before it is journaled and forwarded. Must not block.
    fn on_request(&self, _cx: &RequestCx<'_>, _req: &Request) -> Verdict {
        Verdict::Continue
    }
}

/// The built-in access policy as a filter.
#[derive(Debug)]
pub struct PolicyFilter(pub Policy);

impl Filter for PolicyFilter {
    fn name(&self) -> &str {
        "policy"
    }

    fn on_request(&self, cx: &RequestCx<'_>, req: &Request) -> Verdict {
        let d = self.0.evaluate(cx.route, cx.principal, req);
        match d.effect {
            Effect::Allow => Verdict::Allow(d),
            Effect::Deny => Verdict::Deny(d),
            Effect::RequireApproval => Verdict::Hold(d),
        }
    }
}

/// Filters in order.
#[derive(Debug, Default)]
pub struct FilterChain {
    filters: Vec<Box<dyn Filter>>,
}

impl FilterChain {
    /// A chain of `filters`, run in this order.
    pub fn new(filters: Vec<Box<dyn Filter>>) -> Self {
        Self { filters }
    }

    /// The decision for a request: the first deny; else the first hold; else the last allow;
    /// else, if no filter decided, a deny — a chain that says nothing admits nothing.
    pub fn decide(&self, cx: &RequestCx<'_>, req: &Request, policy_version: &str) -> Decision {
        let mut hold = None;
        let mut allow = None;
        for f in &self.filters {
            match f.on_request(cx, req) {
                Verdict::Continue => {}
                Verdict::Allow(d) => allow = Some(d),
                Verdict::Deny(d) => return d,
                Verdict::Hold(d) => {
                    hold.get_or_insert(d);
                }
            }
        }
        hold.or(allow).unwrap_or_else(|| Decision {
            effect: Effect::Deny,
            rule: "chain:undecided".into(),
            reason: "no filter admitted this request".into(),
            policy_version: policy_version.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Verdict);

    impl Filter for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }

        fn on_request(&self, _: &RequestCx<'_>, _: &Request) -> Verdict {
            self.0.clone()
        }
    }

    fn d(effect: Effect, rule: &str) -> Decision {
        Decision { effect, rule: rule.into(), reason: String::new(), policy_version: "v".into() }
    }

    fn decide(verdicts: Vec<Verdict>) -> Decision {
        let chain = FilterChain::new(verdicts.into_iter().map(|v| Box::new(Fixed(v)) as Box<dyn Filter>).collect());
        let p = Principal::anonymous();
        chain.decide(&RequestCx { route: "r", principal: &p }, &Request::Bytes, "v")
    }

    #[test]
    fn the_first_deny_wins_then_holds_then_the_last_allow() {
        let allow = Verdict::Allow(d(Effect::Allow, "a"));
        let hold = Verdict::Hold(d(Effect::RequireApproval, "h"));
        let deny = Verdict::Deny(d(Effect::Deny, "x"));
        assert_eq!(decide(vec![allow.clone(), hold.clone(), deny.clone()]).rule, "x");
        assert_eq!(decide(vec![allow.clone(), hold.clone(), Verdict::Continue]).rule, "h");
        assert_eq!(decide(vec![allow.clone(), Verdict::Allow(d(Effect::Allow, "b"))]).rule, "b");
        assert_eq!(decide(vec![Verdict::Continue]).rule, "chain:undecided");
        assert_eq!(decide(vec![]).effect, Effect::Deny, "an empty chain admits nothing");
    }
}
