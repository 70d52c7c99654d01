//! What berth reads from a Swarm manager's API (1.41 and later): its own small models of
//! `GET /info`, `/services`, `/tasks` and `/nodes`, with only the fields it uses.
//!
//! Own models rather than bollard's: bollard 0.21's `Task` has no `NetworksAttachments` (the
//! swagger spec it is generated from leaves them out, the engine sends them), and they are the
//! only place a task's overlay addresses are authoritative (`network inspect -v` is the gossip
//! view and lags behind updates). Every field an engine may omit or send as `null` is optional,
//! so an older or newer engine cannot make a whole list fail to parse.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::sources::engine::filters;

pub type Labels = BTreeMap<String, String>;

/// `GET /info`: whether the engine can answer for the swarm.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    #[serde(default)]
    pub swarm: Option<SwarmInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    #[serde(default)]
    pub control_available: bool,
    #[serde(default)]
    pub local_node_state: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl Info {
    /// `Ok` for a manager; why not otherwise.
    pub fn manager(&self) -> Result<(), String> {
        let swarm = self.swarm.as_ref();
        if swarm.is_some_and(|s| s.control_available) {
            return Ok(());
        }
        let state = swarm
            .and_then(|s| s.local_node_state.as_deref())
            .unwrap_or("unknown");
        let error = swarm
            .and_then(|s| s.error.as_deref())
            .filter(|e| !e.is_empty())
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        Err(format!(
            "not a Swarm manager (node state {state}{error}); discovery.swarm.endpoint must name managers"
        ))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    pub spec: ServiceSpec,
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    pub name: String,
    /// Service labels (`docker service create --label`, a stack's `deploy.labels`).
    #[serde(default)]
    pub labels: Option<Labels>,
    #[serde(default)]
    pub task_template: Option<TaskSpec>,
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// A service's task template, or a task's own copy of it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskSpec {
    #[serde(default)]
    pub container_spec: Option<ContainerSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSpec {
    /// Container labels (`--container-label`, a stack's service `labels`).
    #[serde(default)]
    pub labels: Option<Labels>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mode {
    #[serde(default)]
    pub replicated: Option<Replicated>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Replicated {
    #[serde(default)]
    pub replicas: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    #[serde(default)]
    pub state: Option<String>,
}

impl Service {
    pub fn labels(&self) -> Option<&Labels> {
        self.spec.labels.as_ref()
    }

    /// The labels its new tasks' containers get.
    pub fn container_labels(&self) -> Option<&Labels> {
        container_labels(self.spec.task_template.as_ref())
    }

    /// The replica count of a replicated service; `None` for a global one.
    pub fn replicas(&self) -> Option<u64> {
        self.spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .map(|r| r.replicas.unwrap_or(1))
    }

    /// Whether a rolling update or rollback is replacing its tasks now: their later steps emit
    /// no event, so berth polls the service's tasks meanwhile.
    pub fn updating(&self) -> bool {
        matches!(
            self.update_status.as_ref().and_then(|u| u.state.as_deref()),
            Some("updating" | "rollback_started")
        )
    }
}

fn container_labels(spec: Option<&TaskSpec>) -> Option<&Labels> {
    spec?.container_spec.as_ref()?.labels.as_ref()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Empty until the task is scheduled.
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// Set for replicated services (see [`Task::slot`]).
    #[serde(default)]
    pub(super) slot: Option<u64>,
    /// `running`, or `shutdown`/`remove` once the orchestrator decided to stop it: that is
    /// visible ~3 s before the container gets SIGTERM.
    pub desired_state: String,
    pub status: TaskStatus,
    /// The task's own copy of its spec: during a label update, old tasks keep the old labels.
    #[serde(default)]
    pub spec: Option<TaskSpec>,
    #[serde(default)]
    pub networks_attachments: Option<Vec<Attachment>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    /// `pending`, `assigned`, ..., `starting`, `running`, then `shutdown`, `failed`, ...
    pub state: String,
    #[serde(default)]
    pub container_status: Option<ContainerStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub container_id: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    pub network: Network,
    /// CIDR form: `10.0.1.5/24`.
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    #[serde(rename = "ID")]
    pub id: String,
    pub spec: NetworkSpec,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSpec {
    pub name: String,
    /// The routing mesh's network: never a backend address.
    #[serde(default)]
    pub ingress: bool,
}

impl Task {
    /// Its replica number; `None` for a task of a global service (slot 0 or none).
    pub fn slot(&self) -> Option<u64> {
        self.slot.filter(|slot| *slot > 0)
    }

    pub fn running(&self) -> bool {
        self.status.state == "running"
    }

    pub fn desired_running(&self) -> bool {
        self.desired_state == "running"
    }

    pub fn container_id(&self) -> Option<&str> {
        self.status
            .container_status
            .as_ref()?
            .container_id
            .as_deref()
            .filter(|id| !id.is_empty())
    }

    pub fn container_labels(&self) -> Option<&Labels> {
        container_labels(self.spec.as_ref())
    }

    /// (network id, network name, address) on every network but the ingress.
    pub fn addresses(&self) -> impl Iterator<Item = (&str, &str, IpAddr)> {
        self.networks_attachments
            .iter()
            .flatten()
            .filter(|a| !a.network.spec.ingress)
            .filter_map(|a| {
                let cidr = a.addresses.as_ref()?.first()?;
                let ip = cidr.split('/').next()?.parse().ok()?;
                Some((a.network.id.as_str(), a.network.spec.name.as_str(), ip))
            })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub description: Option<NodeDescription>,
    #[serde(default)]
    pub status: Option<NodeStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeDescription {
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    /// `ready`, `down`, `unknown`, `disconnected`.
    #[serde(default)]
    pub state: Option<String>,
}

impl Node {
    pub fn hostname(&self) -> Option<&str> {
        self.description.as_ref()?.hostname.as_deref()
    }

    /// The manager has declared the node lost: its tasks cannot answer, whatever their last
    /// reported state says (it stays `running`).
    pub fn down(&self) -> bool {
        self.status.as_ref().and_then(|s| s.state.as_deref()) == Some("down")
    }
}

/// `GET /tasks` of every service, only the tasks meant to run: without the filter the engine
/// also sends each slot's history (5 old tasks per slot by default).
pub fn tasks_path() -> String {
    format!("/tasks?{}", filters(&[("desired-state", &["running"])]))
}

/// `GET /tasks` of one service (by id: a removed service's name answers 404).
pub fn service_tasks_path(service_id: &str) -> String {
    format!(
        "/tasks?{}",
        filters(&[("desired-state", &["running"]), ("service", &[service_id])])
    )
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A task as a 1.41 engine sends it, trimmed to what matters here (recorded on a
    /// single-node swarm).
    pub const TASK: &str = r#"{
      "ID": "hka60mgnryqrqrcpu1rk7w63i",
      "Version": {"Index": 39},
      "Labels": {},
      "Spec": {
        "ContainerSpec": {"Image": "berth-test-busybox:latest", "Labels": {"aliyun.probe.url": "http://container:80/"}},
        "Networks": [{"Target": "cet88ia3flghewdr9aypflwil"}],
        "ForceUpdate": 0
      },
      "ServiceID": "op6o1ivlidxmb8mcxh2po8wgl",
      "Slot": 1,
      "NodeID": "t5ux24mkns4ow53ws4zaehlfa",
      "Status": {
        "Timestamp": "2026-11-28T16:52:39.936759583Z",
        "State": "running",
        "Message": "started",
        "ContainerStatus": {"ContainerID": "80323d7cf06d918d82989072e5febeef1c34f7c598b3b9ba2881de56f39586c1", "PID": 28670, "ExitCode": -1},
        "PortStatus": {}
      },
      "DesiredState": "shutdown",
      "NetworksAttachments": [
        {"Network": {"ID": "ingressid", "Spec": {"Name": "ingress", "Ingress": true}}, "Addresses": ["10.0.0.5/24"]},
        {"Network": {"ID": "cet88ia3flghewdr9aypflwil", "Spec": {"Name": "apps", "Attachable": true, "Scope": "swarm"}}, "Addresses": ["10.250.0.5/24"]}
      ]
    }"#;

    #[test]
    fn a_task_gives_its_overlay_address_never_the_ingress_one() {
        let task: Task = serde_json::from_str(TASK).unwrap();
        assert_eq!(task.slot(), Some(1));
        assert!(task.running() && !task.desired_running());
        assert_eq!(task.container_id().map(|id| id.len()), Some(64));
        let addresses: Vec<_> = task.addresses().collect();
        assert_eq!(
            addresses,
            [(
                "cet88ia3flghewdr9aypflwil",
                "apps",
                "10.250.0.5".parse().unwrap()
            )]
        );
        assert_eq!(
            task.container_labels().unwrap()["aliyun.probe.url"],
            "http://container:80/"
        );
    }

    #[test]
    fn a_pending_task_has_no_container_yet() {
        let task: Task = serde_json::from_str(
            r#"{"ID": "t", "ServiceID": "s", "DesiredState": "running",
                "Status": {"State": "pending", "ContainerStatus": null},
                "NetworksAttachments": null, "Spec": {"ContainerSpec": {}}}"#,
        )
        .unwrap();
        assert_eq!(task.container_id(), None);
        assert_eq!(task.addresses().count(), 0);
        assert_eq!(task.node_id, "");
        assert_eq!(task.slot(), None, "a global service's task");
    }

    #[test]
    fn services_say_their_labels_mode_and_update_state() {
        let service: Service = serde_json::from_str(
            r#"{"ID": "s1", "Spec": {"Name": "web", "Labels": {"aliyun.routing.port_80": "x.local"},
                 "TaskTemplate": {"ContainerSpec": {"Image": "i"}},
                 "Mode": {"Replicated": {"Replicas": 2}}},
                "UpdateStatus": {"State": "updating", "StartedAt": "2026-11-28T16:52:39Z"}}"#,
        )
        .unwrap();
        assert_eq!(service.replicas(), Some(2));
        assert!(service.updating());
        assert_eq!(service.container_labels(), None);
        let global: Service = serde_json::from_str(
            r#"{"ID": "s2", "Spec": {"Name": "lb", "Mode": {"Global": {}}}, "UpdateStatus": null}"#,
        )
        .unwrap();
        assert_eq!(global.replicas(), None);
        assert!(!global.updating());
    }

    #[test]
    fn only_a_manager_is_accepted() {
        let info: Info = serde_json::from_str(r#"{"Swarm": {"ControlAvailable": true}}"#).unwrap();
        assert!(info.manager().is_ok());
        let info: Info = serde_json::from_str(
            r#"{"Swarm": {"LocalNodeState": "active", "ControlAvailable": false}}"#,
        )
        .unwrap();
        assert!(info.manager().unwrap_err().contains("node state active"));
        let info: Info =
            serde_json::from_str(r#"{"Swarm": {"LocalNodeState": "inactive", "Error": ""}}"#)
                .unwrap();
        assert!(info.manager().unwrap_err().contains("inactive)"));
    }

    #[test]
    fn nodes_say_when_they_are_lost() {
        let node: Node = serde_json::from_str(
            r#"{"ID": "n1", "Description": {"Hostname": "node-1"}, "Status": {"State": "down", "Addr": "10.0.0.1"}}"#,
        )
        .unwrap();
        assert!(node.down());
        assert_eq!(node.hostname(), Some("node-1"));
    }
}
