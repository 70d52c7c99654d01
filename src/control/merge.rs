//! Combines what the sources say into one snapshot. Sources are given in precedence order: an
//! earlier source wins any route (domain + path prefix) a later one also claims, and the loser
//! loses only that route, with a warning. The first source that sets `defaults` sets them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::model::{PolicyLayer, ServiceSpec, Snapshot, SourceKind};

pub struct Merged {
    pub snapshot: Snapshot,
    /// Conflicts, one sentence each, for the log.
    pub warnings: Vec<String>,
}

/// How a source is named in a conflict warning.
fn owner(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::File => "the config file",
        SourceKind::Docker => "Docker discovery",
        SourceKind::Swarm => "Swarm discovery",
    }
}

/// Merges `sources`, sharing every spec it keeps as it is (most of them: a conflict or a
/// name taken by an earlier source is what makes a copy).
pub fn merge(sources: &[&Snapshot]) -> Merged {
    let mut warnings = Vec::new();
    // (domain, path prefix) -> (source, service name) of the route's owner.
    let mut claimed: HashMap<(&str, &str), (SourceKind, &str)> = HashMap::new();
    let mut names: HashSet<String> = HashSet::new();
    let mut services = Vec::new();
    for snapshot in sources {
        let mut own_claims = Vec::new();
        for service in &snapshot.services {
            let mut lost = Vec::new();
            for domain in &service.domains {
                let route = (domain.as_str(), service.path_prefix.as_str());
                match claimed.get(&route) {
                    Some((kind, name)) => {
                        warnings.push(format!(
                            "{} service {:?} claims {domain}{}, which {} routes to service \
                             {name:?}; {} wins",
                            service.source.as_str(),
                            service.name,
                            service.path_prefix,
                            owner(*kind),
                            owner(*kind),
                        ));
                        lost.push(domain.as_str());
                    }
                    None => own_claims.push((route, (service.source, service.name.as_str()))),
                }
            }
            if lost.len() == service.domains.len() {
                continue;
            }
            let renamed = names
                .contains(&service.name)
                .then(|| format!("{}@{}", service.name, service.source.as_str()));
            let kept = if lost.is_empty() && renamed.is_none() {
                Arc::clone(service)
            } else {
                let mut copy = ServiceSpec::clone(service);
                copy.domains.retain(|d| !lost.contains(&d.as_str()));
                if let Some(name) = renamed {
                    copy.name = name;
                }
                Arc::new(copy)
            };
            names.insert(kept.name.clone());
            services.push(kept);
        }
        // Routes a source claims only bind later sources; within one source the source itself
        // has already refused or grouped duplicates.
        claimed.extend(own_claims);
    }
    let defaults: Option<PolicyLayer> = sources.iter().find_map(|s| s.defaults.clone());
    Merged {
        snapshot: Snapshot { services, defaults },
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceSpec;
    use crate::table::tests::service;

    fn from(kind: SourceKind, services: Vec<ServiceSpec>) -> Snapshot {
        Snapshot::of(
            services.into_iter().map(|mut s| {
                s.source = kind;
                s
            }),
            None,
        )
    }

    fn names(merged: &Merged) -> Vec<&str> {
        merged
            .snapshot
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    #[test]
    fn the_file_wins_a_shared_route_and_nothing_else() {
        let file = from(SourceKind::File, vec![service("api", &["api.local"], "/")]);
        let docker = from(
            SourceKind::Docker,
            vec![
                service("api.local", &["api.local", "other.local"], "/"),
                service("api", &["web.local"], "/"),
            ],
        );
        let merged = merge(&[&file, &docker]);
        assert_eq!(names(&merged), ["api", "api.local", "api@docker"]);
        assert_eq!(merged.snapshot.services[1].domains, ["other.local"]);
        assert_eq!(merged.warnings.len(), 1);
        assert!(merged.warnings[0].contains("the config file wins"));
    }

    #[test]
    fn three_sources_merge_in_precedence_order() {
        let mut file = from(SourceKind::File, vec![service("a", &["a.test"], "/")]);
        file.defaults = Some(PolicyLayer {
            retries: Some(7),
            ..PolicyLayer::default()
        });
        let second = from(
            SourceKind::Docker,
            vec![
                service("b", &["b.test"], "/"),
                service("shared", &["a.test", "shared.test"], "/"),
            ],
        );
        let third = from(
            SourceKind::Docker,
            vec![
                service("c", &["c.test"], "/"),
                service("late", &["shared.test", "b.test"], "/"),
                service("a", &["a.test"], "/api"),
            ],
        );
        let merged = merge(&[&file, &second, &third]);
        assert_eq!(names(&merged), ["a", "b", "shared", "c", "a@docker"]);
        let shared = &merged.snapshot.services[2];
        assert_eq!(shared.domains, ["shared.test"], "a.test went to the file");
        assert_eq!(
            merged.snapshot.services[4].path_prefix, "/api",
            "another path of a claimed domain is another route"
        );
        assert_eq!(merged.warnings.len(), 3, "{:?}", merged.warnings);
        assert_eq!(merged.snapshot.defaults.unwrap().retries, Some(7));
    }

    #[test]
    fn no_sources_is_an_empty_table() {
        let merged = merge(&[]);
        assert!(merged.snapshot.services.is_empty());
        assert!(merged.snapshot.defaults.is_none());
    }
}
