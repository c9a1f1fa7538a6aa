//! Finds the task attempts in a Workflow's node tree: which Argo node is "the step" a KFP user
//! sees, which pod ran it, and which attempt it was.
//!
//! KFP v2 compiles each task into a driver Pod, an executor DAG (`system-container-executor`,
//! `displayName` = task name) and the user's Pod under it (`system-container-impl`); the DAG is
//! the task and the pods fold into it. A retry policy puts a Retry node around the pod (its
//! children are the attempts); KFP >= 2.17's template defaults also wrap every node in a Retry
//! node (`task(0)`). KFP v1 and plain Argo tasks are Pod nodes, attempts being Retry children.

use crate::source::objects::{Node, Template};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Which nodes become task facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NodeEvents {
    /// Tasks as a KFP user sees them (v2 executor DAGs, v1 and plain Argo pods).
    #[default]
    Tasks,
    /// Every Argo node: DAGs, Retry wrappers, drivers, step groups.
    All,
}

/// One task attempt found in the tree.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// The node that names the attempt (its id is the facts' key). The first attempt of a KFP v2
    /// task is always named by the executor DAG, so it keeps its identity when a Retry node
    /// appears under the DAG only after the DAG was first seen running.
    pub identity: &'a Node,
    /// The node whose phase and timestamps drive the attempt's facts.
    pub driving: &'a Node,
    /// The pod that ran (or would run) the attempt's container, if there is one.
    pub pod: Option<&'a Node>,
    pub task_name: String,
    pub attempt: u32,
    /// KFP v2 reused a cached result: the executor DAG succeeded without running its pod.
    pub cached: bool,
    /// The pod whose Pending message may carry a lifecycle warning for this attempt (KEP-12843:
    /// Pod nodes only, and of a Retry node only the latest child).
    pub warning_pod: Option<&'a Node>,
    /// An exit handler (`onExit`) or lifecycle hook (its event, e.g. `running`): a task of its own.
    pub hook: Option<String>,
    /// A KFP v2 task whose driver failed: Argo then omits its executor DAG (`depends` not met),
    /// but the task failed; `driving` is the driver's pod.
    pub driver_failed: bool,
    /// The iteration of a loop (`withItems`/`withParam`, KFP `dsl.ParallelFor`) the task runs in:
    /// the `(i:item)` of the nearest iteration node above it (or of its own name).
    pub iteration: Option<u32>,
    /// A retry follows this failed attempt: its Retry node is not finished.
    pub retry_follows: bool,
    /// KFP v2: the DAG component the task is in (the template of the node it runs inside).
    pub component: Option<&'a str>,
    /// Where the task is not one of the workflow's own DAG or steps: the groups it runs inside,
    /// outermost first (nested pipelines, sub-DAG and steps templates, conditions, loop
    /// iterations), then its name: `inner-pipeline.print-op`, `for-loop-2[0].print-op`. One
    /// task instance; `None` for a task of the workflow's own DAG or steps.
    pub path: Option<String>,
}

impl Attempt<'_> {
    /// The task instance, as the subject names it: its path, or its name and iteration.
    pub fn instance(&self) -> String {
        match (&self.path, self.iteration) {
            (Some(path), _) => path.clone(),
            (None, Some(i)) => format!("{}[{i}]", self.task_name),
            (None, None) => self.task_name.clone(),
        }
    }
}

/// The index of a loop iteration node: Argo names it `<name>(<i>:<item>)` (`generateNodeName`,
/// `operator.go`).
pub fn iteration_of(display: &str) -> Option<u32> {
    split_iteration(display).1
}

/// Splits a loop iteration's `(<i>:<item>)` off a name: `sleep(0:zero)` is iteration 0 of
/// `sleep`.
pub fn split_iteration(display: &str) -> (&str, Option<u32>) {
    let Some(open) = display.strip_suffix(')').and_then(|d| d.rfind('(')) else {
        return (display, None);
    };
    match display[open + 1..display.len() - 1]
        .split_once(':')
        .and_then(|(index, _)| index.parse().ok())
    {
        Some(i) => (&display[..open], Some(i)),
        None => (display, None),
    }
}

/// The hook a node runs for, from its name as Argo makes it: `<parent>.onExit` for exit
/// handlers (workflow or task level, `GenerateOnExitNodeName`), `<parent>.hooks.<event>` for
/// lifecycle hooks (`generateLifeHookNodeName`); or `nodeFlag.hooked` (Argo >= 3.5.1).
fn hook_of(node: &Node) -> Option<String> {
    let name = node.name.as_str();
    if name.ends_with(".onExit") {
        return Some("onExit".to_owned());
    }
    if let Some((_, event)) = name.rsplit_once(".hooks.")
        && !event.is_empty()
        && !event.contains('.')
    {
        return Some(event.to_owned());
    }
    node.node_flag
        .as_ref()
        .filter(|f| f.hooked)
        .map(|_| "hook".to_owned())
}

const EXECUTOR: &str = "system-container-executor";
const IMPL: &str = "system-container-impl";
const CONTAINER_DRIVER: &str = "system-container-driver";
const DAG_DRIVER: &str = "system-dag-driver";

/// Splits a retry suffix off a node's display name: `train(2)` is attempt 2 of `train`.
pub fn split_attempt(name: &str) -> (&str, Option<u32>) {
    if let Some(open) = name
        .strip_suffix(')')
        .and_then(|n| n.rfind('(').map(|at| (n, at)))
    {
        let (head, at) = open;
        if let Ok(n) = head[at + 1..].parse::<u32>() {
            return (&name[..at], Some(n));
        }
    }
    (name, None)
}

/// Lists the attempts in `nodes`, ordered by node id for determinism.
pub fn attempts<'a>(
    nodes: &'a BTreeMap<String, Node>,
    templates: &[Template],
    mode: NodeEvents,
    workflow: &str,
) -> Vec<Attempt<'a>> {
    let mut parent: HashMap<&str, &Node> = HashMap::with_capacity(nodes.len());
    for node in nodes.values() {
        for child in &node.children {
            parent.insert(child.as_str(), node);
        }
    }
    // KFP v2 from the compiler's driver templates (present from the first snapshot, before
    // any driver node), or the drivers' nodes where templates are absent.
    let is_driver = |t: &str| t.ends_with(DAG_DRIVER) || t.ends_with(CONTAINER_DRIVER);
    let v2 = templates.iter().any(|t| is_driver(&t.name))
        || nodes.values().any(|n| is_driver(n.template()));
    let tree = Tree {
        nodes,
        parent,
        workflow_prefix: format!("{workflow}."),
        v2_root: v2.then(|| format!("{workflow}.root")),
    };
    match mode {
        NodeEvents::All => nodes
            .values()
            .map(|n| tree.plain(n, n.display_name.as_str()))
            .collect(),
        NodeEvents::Tasks => tree.tasks(&pod_templates(templates)),
    }
}

/// Names of templates that run a pod; a `Skipped` node of one of them is a skipped task.
fn pod_templates(templates: &[Template]) -> HashSet<&str> {
    templates
        .iter()
        .filter(|t| t.dag.is_none() && t.steps.is_none())
        .map(|t| t.name.as_str())
        .collect()
}

struct Tree<'a> {
    nodes: &'a BTreeMap<String, Node>,
    parent: HashMap<&'a str, &'a Node>,
    /// `<workflow>.`: the prefix of the workflow-level hooks' names.
    workflow_prefix: String,
    /// KFP v2: `<workflow>.root`, the node of the pipeline's own DAG (under the root driver).
    v2_root: Option<String>,
}

impl<'a> Tree<'a> {
    fn node(&self, id: &str) -> Option<&'a Node> {
        self.nodes.get(id)
    }

    fn retry_parent(&self, node: &Node) -> Option<&'a Node> {
        self.parent
            .get(node.id.as_str())
            .copied()
            .filter(|p| p.node_type == "Retry")
    }

    /// The attempt number of a Retry child: the `(N)` Argo names it with (a hook or exit
    /// handler under the Retry node is no attempt and shifts nothing), else its position among
    /// the attempts; 0 for a node not under a Retry node.
    fn attempt_of(&self, node: &Node) -> u32 {
        let Some(retry) = self.retry_parent(node) else {
            return 0;
        };
        let last = node.name.rsplit('.').next().unwrap_or(&node.name);
        if let (_, Some(n)) = split_attempt(last) {
            return n;
        }
        retry
            .children
            .iter()
            .filter_map(|c| self.node(c))
            .filter(|c| hook_of(c).is_none())
            .position(|c| c.id == node.id)
            .map_or(0, |i| u32::try_from(i).unwrap_or(u32::MAX))
    }

    /// Whether `pod` may carry a warning: a Pod node, and the latest child if under a Retry node.
    fn warnable(&self, pod: &'a Node) -> Option<&'a Node> {
        if pod.node_type != "Pod" {
            return None;
        }
        match self.retry_parent(pod) {
            Some(retry) if retry.children.last() != Some(&pod.id) => None,
            _ => Some(pod),
        }
    }

    fn plain(&self, node: &'a Node, display: &str) -> Attempt<'a> {
        let pod = (node.node_type == "Pod").then_some(node);
        let hook = hook_of(node);
        let (task_name, attempt) = match &hook {
            // A stable name: the workflow-level handler is `<wf>.onExit`, a different name for
            // every run; a task's is `<task>.onExit` (its display name).
            Some(_) => {
                let name = node
                    .display_name
                    .strip_prefix(&self.workflow_prefix)
                    .unwrap_or(&node.display_name);
                (name.to_owned(), 0)
            }
            // The iteration is a data member of its own (and in the subject), not in the name.
            None => {
                let base = split_attempt(display).0;
                (split_iteration(base).0.to_owned(), self.attempt_of(node))
            }
        };
        let path = self.path(node, &task_name);
        Attempt {
            identity: node,
            driving: node,
            pod,
            task_name,
            attempt,
            cached: false,
            warning_pod: pod.and_then(|p| self.warnable(p)),
            hook,
            driver_failed: false,
            iteration: self.iteration(node),
            retry_follows: self.retry_follows(node),
            component: None,
            path,
        }
    }

    /// [`Attempt::path`]: the scope of `node`, then `task` with the node's own iteration.
    fn path(&self, node: &Node, task: &str) -> Option<String> {
        let scope = self.scope(node)?;
        let own = split_attempt(&node.display_name).0;
        Some(match iteration_of(own) {
            Some(i) => format!("{scope}.{task}[{i}]"),
            None => format!("{scope}.{task}"),
        })
    }

    /// The groups `node` runs inside (see [`Attempt::scope`]), from its boundaries: each
    /// enclosing template's node, up to the workflow's (or, KFP v2, the pipeline's root DAG).
    /// Names lose Argo's retry suffix and write a loop iteration `(i:item)` as `[i]`; KFP v2's
    /// loop machinery (`iteration-iterations(i:i)`, `iteration-item`) folds into its loop.
    fn scope(&self, node: &Node) -> Option<String> {
        let mut segments: Vec<String> = Vec::new();
        let mut pending_iteration = None;
        let mut at = self.node(&node.boundary_id).filter(|b| b.id != node.id);
        let mut hops = 0;
        while let Some(n) = at {
            hops += 1;
            // The workflow's own node, or a boundary cycle (bad input), ends the walk.
            if n.boundary_id.is_empty() || hops > 64 || self.v2_root.as_deref() == Some(&n.name) {
                break;
            }
            let display = n
                .display_name
                .strip_prefix(&self.workflow_prefix)
                .unwrap_or(&n.display_name);
            let (base, iteration) = split_iteration(split_attempt(display).0);
            if self.v2_root.is_some() && base == "iteration-item" {
                // The DAG of one iteration's body: its loop names it.
            } else if self.v2_root.is_some() && base == "iteration-iterations" {
                pending_iteration = iteration;
            } else {
                let mut segment = base.to_owned();
                if let Some(i) = iteration.or(pending_iteration.take()) {
                    segment.push_str(&format!("[{i}]"));
                }
                segments.push(segment);
            }
            if n.boundary_id == n.id {
                break;
            }
            at = self.node(&n.boundary_id);
        }
        if segments.is_empty() {
            return None;
        }
        segments.reverse();
        Some(segments.join("."))
    }

    /// The loop iteration `node` runs in: its own `(i:item)` or that of the nearest template
    /// it runs inside (boundaries, not `children`: in a DAG those are the dependents).
    fn iteration(&self, node: &Node) -> Option<u32> {
        let mut at = Some(node);
        let mut hops = 0;
        while let Some(n) = at {
            let last = n.name.rsplit('.').next().unwrap_or(&n.name);
            // A retried iteration's attempts are `<name>(i:item)(n)`.
            if let Some(i) = iteration_of(split_attempt(last).0) {
                return Some(i);
            }
            hops += 1;
            // A boundary cycle (bad input) ends the walk.
            if hops > 64 || n.boundary_id.is_empty() || n.boundary_id == n.id {
                return None;
            }
            at = self.node(&n.boundary_id);
        }
        None
    }

    /// A failed attempt under a Retry node after which Argo runs another: a later attempt is
    /// already there, or the Retry node has not finished (it creates one). Read again from a
    /// later state the answer stays, so a fact derived again after a restart says the same;
    /// except when the workflow is stopped during the retry's backoff (the Retry node then
    /// ends with no further attempt). A hook under the Retry node is no attempt.
    fn retry_follows(&self, node: &Node) -> bool {
        if !matches!(node.phase.as_str(), "Failed" | "Error") || hook_of(node).is_some() {
            return false;
        }
        let Some(retry) = self.retry_parent(node) else {
            return false;
        };
        if !matches!(retry.phase.as_str(), "Succeeded" | "Failed" | "Error") {
            return true;
        }
        let attempt = self.attempt_of(node);
        retry
            .children
            .iter()
            .filter_map(|c| self.node(c))
            .any(|c| c.id != node.id && hook_of(c).is_none() && self.attempt_of(c) > attempt)
    }

    fn tasks(&self, pod_templates: &HashSet<&str>) -> Vec<Attempt<'a>> {
        let anchors: HashSet<(&str, &str)> = self
            .nodes
            .values()
            .filter(|n| is_executor(n))
            .map(|n| (n.boundary_id.as_str(), split_attempt(&n.display_name).0))
            .collect();
        // Each task's driver, by (boundary, task): `<task>-driver` in the same DAG.
        let drivers: HashMap<(&str, &str), &'a Node> = self
            .nodes
            .values()
            .filter(|n| n.template().ends_with(CONTAINER_DRIVER))
            .filter_map(|n| {
                let task = split_attempt(&n.display_name).0.strip_suffix("-driver")?;
                Some(((n.boundary_id.as_str(), task), n))
            })
            .collect();
        let mut out = Vec::new();
        for node in self.nodes.values() {
            let template = node.template();
            if is_executor(node) {
                let task = split_attempt(&node.display_name).0;
                let driver = drivers.get(&(node.boundary_id.as_str(), task)).copied();
                self.v2_task(node, driver, &mut out);
            } else if template.ends_with(CONTAINER_DRIVER) {
                let name = split_attempt(&node.display_name).0;
                match name.strip_suffix("-driver") {
                    // A task whose driver failed before Argo made its executor node; KFP (PR
                    // #13863) then reports the driver's message for the task, and so do we.
                    Some(task) => {
                        let failed = matches!(node.phase.as_str(), "Failed" | "Error");
                        if node.node_type == "Pod"
                            && failed
                            && !anchors.contains(&(node.boundary_id.as_str(), task))
                        {
                            let mut attempt = self.plain(node, task);
                            attempt.warning_pod = None;
                            attempt.driver_failed = true;
                            out.push(attempt);
                        }
                    }
                    // A driver with no executor: the driver is the task (kfp-kubernetes
                    // `CreatePVC`/`DeletePVC` run in the driver, `--type` other than CONTAINER).
                    None if matches!(node.node_type.as_str(), "Pod" | "Skipped") => {
                        out.push(self.plain(node, name));
                    }
                    None => {}
                }
            } else if template.ends_with(IMPL)
                || template.ends_with(DAG_DRIVER)
                || template.ends_with(EXECUTOR)
            {
                // v2 bookkeeping: folded into the executor DAG above.
            } else if matches!(
                node.node_type.as_str(),
                "Pod" | "HTTP" | "Plugin" | "Suspend"
            ) || (node.node_type == "Skipped"
                && (node.template_ref.is_some()
                    || pod_templates.contains(template)
                    // Argo < 2.4 created skipped steps without a template.
                    || template.is_empty()))
            {
                // HTTP and plugin steps run in the Argo agent, Suspend nodes wait for approval
                // or a duration: steps all the same (no pod).
                let display = match self.retry_parent(node) {
                    Some(retry) if hook_of(node).is_none() => retry.display_name.as_str(),
                    _ => node.display_name.as_str(),
                };
                out.push(self.plain(node, display));
            }
        }
        out
    }

    fn v2_task(&self, anchor: &'a Node, driver: Option<&'a Node>, out: &mut Vec<Attempt<'a>>) {
        let task_name = split_attempt(&anchor.display_name).0.to_owned();
        let iteration = self.iteration(anchor);
        let boundary = self.node(&anchor.boundary_id);
        let component = boundary.map(Node::template);
        let path = self.path(anchor, &task_name);
        // The task of a `dsl.ExitHandler` runs in the exit hook's DAG (`<group>.onExit`).
        let hook = boundary.and_then(hook_of);
        // Its driver failed: Argo omits the executor DAG (`depends` on the driver not met,
        // `dag.go`), but the task failed, with the driver's message.
        if matches!(anchor.phase.as_str(), "Omitted" | "Skipped")
            && let Some(driver) = driver.filter(|d| matches!(d.phase.as_str(), "Failed" | "Error"))
        {
            out.push(Attempt {
                identity: anchor,
                driving: driver,
                pod: Some(driver),
                task_name,
                attempt: 0,
                cached: false,
                warning_pod: None,
                hook: hook.clone(),
                driver_failed: true,
                iteration,
                retry_follows: false,
                component,
                path,
            });
            return;
        }
        let children = anchor.children.iter().filter_map(|c| self.node(c));
        let mut pod = None;
        for child in children {
            if child.node_type == "Retry" && !child.children.is_empty() {
                // A KFP retry policy: every child pod is an attempt of its own.
                for pod in child.children.iter().filter_map(|c| self.node(c)) {
                    let attempt = self.attempt_of(pod);
                    out.push(Attempt {
                        identity: if attempt == 0 { anchor } else { pod },
                        driving: pod,
                        pod: Some(pod),
                        task_name: task_name.clone(),
                        attempt,
                        cached: false,
                        warning_pod: self.warnable(pod),
                        hook: hook.clone(),
                        driver_failed: false,
                        iteration,
                        retry_follows: self.retry_follows(pod),
                        component,
                        path: path.clone(),
                    });
                }
                return;
            }
            if child.node_type == "Pod" {
                pod = Some(child);
            }
        }
        let ran = pod.is_some_and(|p| !matches!(p.phase.as_str(), "Skipped" | "Omitted"));
        out.push(Attempt {
            identity: anchor,
            driving: anchor,
            pod,
            task_name,
            attempt: self.attempt_of(anchor),
            cached: anchor.phase == "Succeeded" && !ran,
            warning_pod: pod.and_then(|p| self.warnable(p)),
            hook,
            driver_failed: false,
            iteration,
            retry_follows: false,
            component,
            path,
        });
    }
}

fn is_executor(node: &Node) -> bool {
    node.template().ends_with(EXECUTOR) && node.node_type != "Retry"
}

#[cfg(test)]
mod tests {
    use super::split_attempt;

    #[test]
    fn retry_suffixes() {
        assert_eq!(split_attempt("train(2)"), ("train", Some(2)));
        assert_eq!(split_attempt("train"), ("train", None));
        assert_eq!(split_attempt("f(x)"), ("f(x)", None));
        assert_eq!(split_attempt("()"), ("()", None));
        assert_eq!(split_attempt(")"), (")", None));
    }
}
