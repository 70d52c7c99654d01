//! The swarm as berth last listed it, and what berth routes from it: which tasks are backends
//! and at which address, which services to poll, and the handover that keeps a rolling update
//! from leaving a route with nothing but backends berth has not probed yet. Pure: no I/O, the
//! clock is passed in, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::api::{Labels, Node, Service, Task};
use crate::model::Placement;
use crate::sources::docker::labels::{asks_for_routes, Instance};

/// How long a task that is leaving keeps serving when every other backend of its service
/// joined less than this ago. A rolling update stops an old task in the same instant its
/// successor starts running; draining the old one at once would leave the route with only a
/// backend whose first probe (immediate, then every 250 ms) has not passed: 503s. One second
/// covers a few probes and still ends ~1.5 s before the old task's SIGTERM (the engine sends it
/// ~3.1 s after the desired state changes; berth sees the change within one poll, 0.5 s).
pub const HANDOVER: Duration = Duration::from_secs(1);

/// How long after a change berth keeps polling a service whose tasks are not all running yet
/// (new tasks start without any event). A task still pending after this (no node fits it)
/// is left to the periodic re-list.
pub const SETTLE: Duration = Duration::from_secs(30);

pub struct Cluster {
    prefixes: Vec<String>,
    /// berth's own container id, when it runs in one.
    own_container: Option<String>,
    /// The networks (ids) of berth's own container from `docker inspect`, for a berth that is
    /// a plain container rather than a task.
    inspected_networks: Option<BTreeSet<String>>,
    services: HashMap<String, Service>,
    /// Tasks whose desired state is `running`, by id.
    tasks: HashMap<String, Task>,
    nodes: HashMap<String, Node>,
    /// What the last [`Cluster::route`] routed, by task id.
    routed: HashMap<String, Routed>,
    /// Tasks that left but keep serving for the handover, by task id.
    held: HashMap<String, Held>,
    /// Service name -> when berth last saw it change (an event, a new task).
    touched: HashMap<String, Instant>,
}

struct Routed {
    service_id: String,
    node_id: String,
    /// When berth first routed it.
    since: Instant,
    instance: Instance,
}

struct Held {
    node_id: String,
    until: Instant,
    instance: Instance,
}

impl Cluster {
    pub fn new(prefixes: Vec<String>, own_container: Option<String>) -> Cluster {
        Cluster {
            prefixes,
            own_container,
            inspected_networks: None,
            services: HashMap::new(),
            tasks: HashMap::new(),
            nodes: HashMap::new(),
            routed: HashMap::new(),
            held: HashMap::new(),
            touched: HashMap::new(),
        }
    }

    /// A full list: services, the tasks meant to run, nodes.
    pub fn listed(
        &mut self,
        services: Vec<Service>,
        tasks: Vec<Task>,
        nodes: Vec<Node>,
        now: Instant,
    ) {
        let services: HashMap<String, Service> =
            services.into_iter().map(|s| (s.id.clone(), s)).collect();
        for service in services.values() {
            if !self.services.contains_key(&service.id) {
                self.touched.insert(service.spec.name.clone(), now);
            }
        }
        self.services = services;
        let names: BTreeSet<&String> = self.services.values().map(|s| &s.spec.name).collect();
        self.touched.retain(|name, _| names.contains(name));
        self.nodes = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
        self.listed_tasks(|_| true, tasks, now);
    }

    /// Tasks re-listed: every task `replaces` says the list covers is replaced by `tasks`.
    pub fn listed_tasks(
        &mut self,
        replaces: impl Fn(&Task) -> bool,
        tasks: Vec<Task>,
        now: Instant,
    ) {
        for task in &tasks {
            if !self.tasks.contains_key(&task.id) {
                if let Some(service) = self.services.get(&task.service_id) {
                    self.touched.insert(service.spec.name.clone(), now);
                }
            }
        }
        self.tasks.retain(|_, task| !replaces(task));
        self.tasks
            .extend(tasks.into_iter().map(|t| (t.id.clone(), t)));
    }

    /// An event named this service; `None`: a node changed, which may move any service's
    /// tasks.
    pub fn touch(&mut self, service_name: Option<&str>, now: Instant) {
        match service_name {
            Some(name) => {
                self.touched.insert(name.to_owned(), now);
            }
            None => {
                for service in self.services.values() {
                    self.touched.insert(service.spec.name.clone(), now);
                }
            }
        }
    }

    /// Whether berth runs as one of the listed tasks (then its networks are known from it).
    pub fn own_task_listed(&self) -> bool {
        self.own_task().is_some()
    }

    pub fn own_container(&self) -> Option<&str> {
        self.own_container.as_deref()
    }

    pub fn set_inspected_networks(&mut self, networks: BTreeSet<String>) {
        self.inspected_networks = Some(networks);
    }

    fn own_task(&self) -> Option<&Task> {
        let own = self.own_container.as_deref()?;
        self.tasks.values().find(|t| t.container_id() == Some(own))
    }

    /// The networks (ids) berth's own container is on, when berth knows them.
    fn own_networks(&self) -> Option<BTreeSet<String>> {
        match self.own_task() {
            Some(task) => Some(task.addresses().map(|(id, _, _)| id.to_owned()).collect()),
            None => self.inspected_networks.clone(),
        }
    }

    /// Whether the service's labels (or its containers') ask for routes.
    fn routes(&self, service: &Service) -> bool {
        let asks = |labels: Option<&Labels>| {
            labels.is_some_and(|labels| asks_for_routes(labels, &self.prefixes))
        };
        asks(service.labels()) || asks(service.container_labels())
    }

    fn node_down(&self, node_id: &str) -> bool {
        self.nodes.get(node_id).is_some_and(Node::down)
    }

    /// Routed services whose tasks change without events, to poll: during a rolling update or
    /// rollback, and for [`SETTLE`] after a change while some task is not running yet (scale
    /// up, a replacement after a crash or a lost node).
    pub fn converging(&self, now: Instant) -> Vec<String> {
        // Per service: how many of its tasks meant to run there are, and whether all run.
        let mut tasks: HashMap<&str, (u64, bool)> = HashMap::new();
        for task in self.tasks.values() {
            let entry = tasks.entry(task.service_id.as_str()).or_insert((0, true));
            entry.0 += 1;
            entry.1 &= task.running();
        }
        let mut converging: Vec<String> = self
            .services
            .values()
            .filter(|service| self.routes(service))
            .filter(|service| {
                let recent = self
                    .touched
                    .get(&service.spec.name)
                    .is_some_and(|at| now.saturating_duration_since(*at) < SETTLE);
                // Every task meant to run runs, and as many as the service asks for.
                let (count, running) = tasks.get(service.id.as_str()).copied().unwrap_or((0, true));
                let settled = running && service.replicas().is_none_or(|r| count >= r);
                service.updating() || (recent && !settled)
            })
            .map(|service| service.id.clone())
            .collect();
        converging.sort();
        converging
    }

    /// The backends to publish now, and warnings for the log. Tasks that left since the last
    /// call are dropped at once, unless the handover holds them ([`HANDOVER`]).
    pub fn route(&mut self, now: Instant) -> (Vec<Instance>, Vec<String>) {
        let own = self.own_networks();
        let mut warnings = Vec::new();
        let mut current: HashMap<String, Routed> = HashMap::new();
        for task in self.tasks.values() {
            if !task.desired_running() || !task.running() || self.node_down(&task.node_id) {
                continue;
            }
            let Some(service) = self.services.get(&task.service_id) else {
                continue;
            };
            // The service's labels over its containers': a stack's `deploy.labels` and
            // `labels` both count, and the service has the last word on a key both set.
            let mut labels = task.container_labels().cloned().unwrap_or_default();
            labels.extend(service.labels().cloned().unwrap_or_default());
            if !asks_for_routes(&labels, &self.prefixes) {
                continue;
            }
            let Some(instance) = self.instance(task, service, labels, own.as_ref(), &mut warnings)
            else {
                continue;
            };
            let since = self.routed.get(&task.id).map_or(now, |r| r.since);
            current.insert(
                task.id.clone(),
                Routed {
                    service_id: service.id.clone(),
                    node_id: task.node_id.clone(),
                    since,
                    instance,
                },
            );
        }
        for (id, left) in std::mem::take(&mut self.routed) {
            if current.contains_key(&id) {
                continue;
            }
            let alive =
                self.tasks.get(&id).is_none_or(Task::running) && !self.node_down(&left.node_id);
            if let Some(until) = handover(&left.service_id, &current, now).filter(|_| alive) {
                self.held.insert(
                    id,
                    Held {
                        node_id: left.node_id,
                        until,
                        instance: left.instance,
                    },
                );
            }
        }
        let nodes = &self.nodes;
        self.held.retain(|id, held| {
            held.until > now
                && !current.contains_key(id)
                && !nodes.get(&held.node_id).is_some_and(Node::down)
        });
        let mut instances: Vec<Instance> = current
            .values()
            .map(|r| r.instance.clone())
            .chain(self.held.values().map(|h| h.instance.clone()))
            .collect();
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        self.routed = current;
        (instances, warnings)
    }

    /// When the next held task's handover ends.
    pub fn next_handover(&self) -> Option<Instant> {
        self.held.values().map(|h| h.until).min()
    }

    /// The task as one running copy of its workload: the container's id (the sticky cookie
    /// stays acsrouting's `CONTAINERID`), Docker's name for the task's container, and its
    /// addresses on the networks berth shares with it.
    fn instance(
        &self,
        task: &Task,
        service: &Service,
        labels: Labels,
        own: Option<&BTreeSet<String>>,
        warnings: &mut Vec<String>,
    ) -> Option<Instance> {
        let service_name = &service.spec.name;
        let name = match task.slot() {
            Some(slot) => format!("{service_name}.{slot}.{}", task.id),
            None => format!("{service_name}.{}.{}", task.node_id, task.id),
        };
        let all: Vec<(&str, &str, IpAddr)> = task.addresses().collect();
        let shared: BTreeMap<String, IpAddr> = all
            .iter()
            .filter(|(id, _, _)| own.is_none_or(|own| own.contains(*id)))
            .map(|(_, network, ip)| (network.to_string(), *ip))
            .collect();
        if shared.is_empty() && !all.is_empty() {
            let on: Vec<&str> = all.iter().map(|(_, network, _)| *network).collect();
            warnings.push(format!(
                "task {name} shares no network with berth (it is on: {}); attach berth to one \
                 of them to route it",
                on.join(", ")
            ));
            return None;
        }
        Some(Instance {
            id: task.container_id().unwrap_or(&task.id).to_owned(),
            name,
            placement: Some(Placement {
                service: service_name.clone(),
                task_id: task.id.clone(),
                slot: task.slot(),
                node: self
                    .nodes
                    .get(&task.node_id)
                    .and_then(Node::hostname)
                    .unwrap_or(&task.node_id)
                    .to_owned(),
            }),
            labels,
            networks: shared,
            // The engine reports a task with a HEALTHCHECK as `running` only once healthy,
            // and replaces it when it turns unhealthy.
            platform_health: None,
            draining: false,
        })
    }
}

/// Until when a task of `service_id` that just left keeps serving: while every backend the
/// service still has joined less than [`HANDOVER`] ago; `None` when one has been serving
/// longer (or none is left: a removed service is not handed over to anyone).
fn handover(service_id: &str, current: &HashMap<String, Routed>, now: Instant) -> Option<Instant> {
    let mut first_ready: Option<Instant> = None;
    for sibling in current.values().filter(|r| r.service_id == service_id) {
        let ready = sibling.since + HANDOVER;
        if ready <= now {
            return None;
        }
        first_ready = Some(first_ready.map_or(ready, |at| at.min(ready)));
    }
    first_ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::swarm::api::tests::TASK;

    fn prefixes() -> Vec<String> {
        vec!["berth".into(), "aliyun".into()]
    }

    fn service(id: &str, name: &str, labels: &[(&str, &str)], replicas: u64) -> Service {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serde_json::from_value(serde_json::json!({
            "ID": id,
            "Spec": {"Name": name, "Labels": labels,
                     "Mode": {"Replicated": {"Replicas": replicas}}},
        }))
        .unwrap()
    }

    /// A running task of `service` on node `n1` at `10.250.0.<ip>` on overlay `apps`.
    fn task(id: &str, service: &str, slot: u64, ip: u8) -> Task {
        let mut task: Task = serde_json::from_str(TASK).unwrap();
        task.id = id.into();
        task.service_id = service.into();
        task.slot = Some(slot);
        task.node_id = "n1".into();
        task.desired_state = "running".into();
        task.status.container_status = None;
        let apps = task.networks_attachments.as_mut().unwrap();
        apps[1].addresses = Some(vec![format!("10.250.0.{ip}/24")]);
        task
    }

    fn node(id: &str, hostname: &str, state: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "ID": id, "Description": {"Hostname": hostname}, "Status": {"State": state},
        }))
        .unwrap()
    }

    fn web() -> Service {
        service("s1", "web", &[("aliyun.routing.port_80", "web.local")], 2)
    }

    fn names(instances: &[Instance]) -> Vec<&str> {
        instances.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn running_tasks_are_instances_with_service_labels_over_container_labels() {
        let mut cluster = Cluster::new(prefixes(), None);
        let mut labelled = service(
            "s1",
            "web",
            &[
                ("aliyun.routing.port_80", "web.local"),
                ("aliyun.probe.url", "tcp://container:80"),
            ],
            2,
        );
        labelled
            .spec
            .labels
            .as_mut()
            .unwrap()
            .insert("other".into(), "x".into());
        let mut starting = task("t3", "s1", 3, 7);
        starting.status.state = "starting".into();
        let now = Instant::now();
        cluster.listed(
            vec![labelled],
            vec![task("t1", "s1", 1, 5), task("t2", "s1", 2, 6), starting],
            vec![node("n1", "node-1", "ready")],
            now,
        );
        let (instances, warnings) = cluster.route(now);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(names(&instances), ["web.1.t1", "web.2.t2"]);
        let first = &instances[0];
        assert_eq!(
            first.labels["aliyun.probe.url"], "tcp://container:80",
            "the service's label wins over the container's"
        );
        assert_eq!(
            first.networks,
            [("apps".to_string(), "10.250.0.5".parse().unwrap())].into(),
            "never the ingress address"
        );
        assert_eq!(
            first.placement,
            Some(Placement {
                service: "web".into(),
                task_id: "t1".into(),
                slot: Some(1),
                node: "node-1".into(),
            })
        );
        assert_eq!(
            first.id, "t1",
            "the task id stands in for an unknown container id"
        );
    }

    #[test]
    fn container_labels_route_a_service_without_service_labels() {
        let mut cluster = Cluster::new(prefixes(), None);
        let mut t = task("t1", "s9", 1, 5);
        t.spec = serde_json::from_value(serde_json::json!({
            "ContainerSpec": {"Labels": {"berth.routing.port_80": "c.local"}}
        }))
        .unwrap();
        let now = Instant::now();
        cluster.listed(vec![service("s9", "c", &[], 1)], vec![t], vec![], now);
        let (instances, _) = cluster.route(now);
        assert_eq!(names(&instances), ["c.1.t1"]);
        assert_eq!(instances[0].placement.as_ref().unwrap().node, "n1");
    }

    #[test]
    fn a_task_leaving_drains_at_once_when_a_ready_sibling_remains() {
        let mut cluster = Cluster::new(prefixes(), None);
        let t0 = Instant::now();
        cluster.listed(
            vec![web()],
            vec![task("t1", "s1", 1, 5), task("t2", "s1", 2, 6)],
            vec![],
            t0,
        );
        cluster.route(t0);
        let later = t0 + HANDOVER * 5;
        cluster.listed_tasks(
            |t| t.service_id == "s1",
            vec![task("t2", "s1", 2, 6)],
            later,
        );
        let (instances, _) = cluster.route(later);
        assert_eq!(names(&instances), ["web.2.t2"]);
        assert_eq!(cluster.next_handover(), None);
    }

    #[test]
    fn a_rolling_update_hands_over_to_a_newcomer_for_a_second_at_most() {
        let mut cluster = Cluster::new(prefixes(), None);
        let t0 = Instant::now();
        cluster.listed(vec![web()], vec![task("old", "s1", 1, 5)], vec![], t0);
        cluster.route(t0);
        // The same list shows the successor running and the old task no longer meant to run.
        let t1 = t0 + Duration::from_secs(10);
        cluster.listed_tasks(|_| true, vec![task("new", "s1", 1, 6)], t1);
        let (instances, _) = cluster.route(t1);
        assert_eq!(names(&instances), ["web.1.new", "web.1.old"]);
        assert_eq!(cluster.next_handover(), Some(t1 + HANDOVER));
        let (instances, _) = cluster.route(t1 + HANDOVER / 2);
        assert_eq!(names(&instances), ["web.1.new", "web.1.old"]);
        let (instances, _) = cluster.route(t1 + HANDOVER);
        assert_eq!(names(&instances), ["web.1.new"]);
        assert_eq!(cluster.next_handover(), None);
    }

    #[test]
    fn a_removed_service_and_a_lost_node_are_never_handed_over() {
        let mut cluster = Cluster::new(prefixes(), None);
        let t0 = Instant::now();
        cluster.listed(vec![web()], vec![task("t1", "s1", 1, 5)], vec![], t0);
        cluster.route(t0);
        cluster.listed(vec![], vec![], vec![], t0);
        assert!(cluster.route(t0).0.is_empty(), "service rm drops the route");

        let mut lost = task("t2", "s1", 2, 6);
        lost.node_id = "n2".into();
        cluster.listed(
            vec![web()],
            vec![task("t1", "s1", 1, 5), lost.clone()],
            vec![node("n1", "node-1", "ready"), node("n2", "node-2", "ready")],
            t0,
        );
        assert_eq!(cluster.route(t0).0.len(), 2);
        // The node is declared down; the replacement on n1 has just started.
        cluster.listed(
            vec![web()],
            vec![task("t1", "s1", 1, 5), lost, task("t3", "s1", 2, 7)],
            vec![node("n1", "node-1", "ready"), node("n2", "node-2", "down")],
            t0,
        );
        let (instances, _) = cluster.route(t0);
        assert_eq!(names(&instances), ["web.1.t1", "web.2.t3"]);
    }

    #[test]
    fn only_networks_shared_with_berth_give_addresses() {
        let own = "b".repeat(64);
        let mut berth = task("tb", "s0", 1, 2);
        berth.status.container_status =
            serde_json::from_value(serde_json::json!({"ContainerID": own})).unwrap();
        let mut elsewhere = task("t2", "s1", 2, 6);
        for attachment in elsewhere.networks_attachments.as_mut().unwrap() {
            attachment.network.id = "other".into();
            attachment.network.spec.name = "private".into();
        }
        let mut cluster = Cluster::new(prefixes(), Some(own));
        let now = Instant::now();
        cluster.listed(
            vec![service("s0", "berth", &[], 1), web()],
            vec![berth, task("t1", "s1", 1, 5), elsewhere],
            vec![],
            now,
        );
        assert!(cluster.own_task_listed());
        let (instances, warnings) = cluster.route(now);
        assert_eq!(names(&instances), ["web.1.t1"]);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("web.2.t2") && warnings[0].contains("it is on: private"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn services_converge_while_updating_or_starting_tasks() {
        let mut cluster = Cluster::new(prefixes(), None);
        let t0 = Instant::now();
        let mut pending = task("t2", "s1", 2, 6);
        pending.status.state = "pending".into();
        let unrouted = service("s2", "db", &[], 1);
        cluster.listed(
            vec![web(), unrouted],
            vec![task("t1", "s1", 1, 5), pending],
            vec![],
            t0,
        );
        assert_eq!(cluster.converging(t0), ["s1"], "a new task is starting");
        assert!(
            cluster.converging(t0 + SETTLE).is_empty(),
            "a task pending for long is left to the re-list"
        );
        cluster.listed_tasks(
            |_| true,
            vec![task("t1", "s1", 1, 5), task("t2", "s1", 2, 6)],
            t0,
        );
        assert!(cluster.converging(t0).is_empty(), "settled");
        cluster.listed_tasks(|_| true, vec![task("t1", "s1", 1, 5)], t0);
        assert_eq!(cluster.converging(t0), ["s1"], "one replica short");

        let mut updating = web();
        updating.update_status =
            serde_json::from_value(serde_json::json!({"State": "updating"})).unwrap();
        let later = t0 + SETTLE * 2;
        cluster.listed(
            vec![updating],
            vec![task("t1", "s1", 1, 5), task("t2", "s1", 2, 6)],
            vec![],
            later,
        );
        assert_eq!(cluster.converging(later), ["s1"]);
        cluster.listed(vec![web()], vec![task("t1", "s1", 1, 5)], vec![], later);
        assert!(cluster.converging(later + SETTLE).is_empty());
        cluster.touch(None, later + SETTLE);
        assert_eq!(
            cluster.converging(later + SETTLE),
            ["s1"],
            "a node event counts as a change for every service"
        );
    }
}
