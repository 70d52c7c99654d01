//! Combines what the sources say into one snapshot. The config file wins any route it shares
//! with a discovered service; the loser loses only that route, with a warning.

use std::collections::{HashMap, HashSet};

use crate::model::{ServiceSpec, Snapshot};

pub struct Merged {
    pub snapshot: Snapshot,
    /// Conflicts, one sentence each, for the log.
    pub warnings: Vec<String>,
}

pub fn merge(file: &Snapshot, discovered: &Snapshot) -> Merged {
    let mut warnings = Vec::new();
    let mut claimed: HashMap<(&str, &str), &str> = HashMap::new();
    for service in &file.services {
        for domain in &service.domains {
            claimed.insert((domain, &service.path_prefix), &service.name);
        }
    }
    let names: HashSet<&str> = file.services.iter().map(|s| s.name.as_str()).collect();

    let mut services: Vec<ServiceSpec> = file.services.clone();
    for service in &discovered.services {
        let mut kept = service.clone();
        kept.domains.retain(|domain| {
            match claimed.get(&(domain.as_str(), service.path_prefix.as_str())) {
                Some(owner) => {
                    warnings.push(format!(
                        "{} service {:?} claims {domain}{}, which the config file routes to \
                         service {owner:?}; the config file wins",
                        service.source.as_str(),
                        service.name,
                        service.path_prefix
                    ));
                    false
                }
                None => true,
            }
        });
        if kept.domains.is_empty() {
            continue;
        }
        if names.contains(kept.name.as_str()) {
            kept.name = format!("{}@{}", kept.name, kept.source.as_str());
        }
        services.push(kept);
    }
    Merged {
        snapshot: Snapshot { services },
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;
    use crate::router::tests::service;

    #[test]
    fn the_file_wins_a_shared_route_and_nothing_else() {
        let file = Snapshot {
            services: vec![service("api", &["api.local"], "/")],
        };
        let mut docker_api = service("api.local", &["api.local", "other.local"], "/");
        docker_api.source = Source::Docker;
        let mut docker_web = service("api", &["web.local"], "/");
        docker_web.source = Source::Docker;
        let merged = merge(
            &file,
            &Snapshot {
                services: vec![docker_api, docker_web],
            },
        );
        let names: Vec<_> = merged
            .snapshot
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["api", "api.local", "api@docker"]);
        assert_eq!(merged.snapshot.services[1].domains, ["other.local"]);
        assert_eq!(merged.warnings.len(), 1);
        assert!(merged.warnings[0].contains("config file wins"));
    }
}
