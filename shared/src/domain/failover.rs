//! Which provider an attempt sends through: the first of its route, the next one after a
//! failure, and the same one, always, once an answer left it unknown whether the message went
//! out (so no two providers ever both send it).

/// What a delivery's record says about the providers its attempts used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderTrail {
    /// The provider the latest attempt sent through (on a first attempt, the one its claim
    /// chose).
    pub provider: Option<String>,
    /// An answer from `provider` left it unknown whether the message went out (or the attempt
    /// calling it died): no other provider may send it.
    pub pinned: bool,
    /// The latest attempt ended with a failure from `provider` that moves the delivery on.
    pub failed: bool,
}

/// The provider an attempt sends through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub provider: String,
    /// The delivery is (now) pinned to it.
    pub pinned: bool,
}

/// Chooses the provider of an attempt from `route` (the providers that serve the destination
/// now, in the order to try them; never empty) and the delivery's `trail`. `took_over`: the
/// previous attempt died, perhaps after calling its provider, which pins the delivery to it.
pub fn choose(route: &[&str], trail: &ProviderTrail, took_over: bool) -> Choice {
    let first = || route.first().copied().unwrap_or_default().to_string();
    match &trail.provider {
        Some(provider) if trail.pinned || took_over => Choice { provider: provider.clone(), pinned: true },
        Some(failed) if trail.failed => {
            let next = match route.iter().position(|candidate| candidate == failed) {
                Some(position) => route[(position + 1) % route.len()].to_string(),
                None => first(),
            };
            Choice { provider: next, pinned: false }
        }
        _ => Choice { provider: first(), pinned: false },
    }
}

/// The provider to try after `refused` declined the destination within one attempt: the next
/// of `route` not yet `tried` in it, if any.
pub fn after_refusal<'a>(route: &[&'a str], tried: &[String]) -> Option<&'a str> {
    route.iter().copied().find(|candidate| !tried.iter().any(|done| done == candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(provider: Option<&str>, pinned: bool, failed: bool) -> ProviderTrail {
        ProviderTrail { provider: provider.map(str::to_string), pinned, failed }
    }

    fn chosen(route: &[&str], trail: &ProviderTrail, took_over: bool) -> (String, bool) {
        let choice = choose(route, trail, took_over);
        (choice.provider, choice.pinned)
    }

    #[test]
    fn a_first_attempt_takes_the_routes_first_provider() {
        assert_eq!(chosen(&["twilio", "sns"], &trail(None, false, false), false), ("twilio".into(), false));
        assert_eq!(chosen(&["twilio", "sns"], &trail(Some("twilio"), false, false), false), ("twilio".into(), false));
    }

    #[test]
    fn a_failure_moves_the_next_attempt_to_the_next_provider_round_the_route() {
        let route = ["sns", "twilio"];
        assert_eq!(chosen(&route, &trail(Some("sns"), false, true), false), ("twilio".into(), false));
        assert_eq!(chosen(&route, &trail(Some("twilio"), false, true), false), ("sns".into(), false));
        assert_eq!(chosen(&["sns"], &trail(Some("sns"), false, true), false), ("sns".into(), false));
        // A provider no longer in the route (on-call changed it): the route's first.
        assert_eq!(chosen(&["twilio"], &trail(Some("sns"), false, true), false), ("twilio".into(), false));
    }

    #[test]
    fn an_ambiguous_answer_or_a_dead_attempt_keeps_the_delivery_on_its_provider() {
        let route = ["sns", "twilio"];
        assert_eq!(chosen(&route, &trail(Some("twilio"), true, true), false), ("twilio".into(), true));
        assert_eq!(chosen(&route, &trail(Some("twilio"), false, false), true), ("twilio".into(), true));
        // Even when the route no longer names it: only it may have sent the message.
        assert_eq!(chosen(&["sns"], &trail(Some("twilio"), true, false), false), ("twilio".into(), true));
        // A first attempt that died before its claim named a provider pins nothing.
        assert_eq!(chosen(&route, &trail(None, false, false), true), ("sns".into(), false));
    }

    #[test]
    fn a_refusal_moves_on_to_a_provider_not_yet_tried() {
        let route = ["twilio", "sns"];
        assert_eq!(after_refusal(&route, &["twilio".into()]), Some("sns"));
        assert_eq!(after_refusal(&route, &["twilio".into(), "sns".into()]), None);
    }
}
