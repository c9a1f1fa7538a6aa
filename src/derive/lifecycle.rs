//! KEP-12843 pod lifecycle classification: which Pending-pod messages mean the task is stuck, in
//! which category, and whether the category fixes itself.
//!
//! The table is ordered and the first substring match wins, as in kubeflow/pipelines PR #13863
//! (`podFailurePatterns`). Only texts that can be the message of a Pending Pod node are in it
//! (argo-workflows f016ad89, `workflow/controller/operator.go`): `getPendingReason` writes the
//! first waiting regular container's `<reason>: <message>` or `Unschedulable: <message>` of
//! the PodScheduled condition; a pod creation that failed transiently (`IsTransientErr`,
//! `util/errors/errors.go`) leaves the node Pending with the API server's error. Reasons of
//! terminated containers and failed pods (`OOMKilled`, `CrashLoopBackOff` — Argo's pods never
//! restart, `restartPolicy: Never` —, `DeadlineExceeded`, `Preempted`, `NodeLost`, …) and
//! Event-only reasons (`FailedMount`, `FailedAttachVolume`, `FailedScheduling`) never are, so
//! they are not here. Volume comes before scheduling because a volume problem surfaces inside an
//! `Unschedulable: …` message; Quota before Admission, whose `is forbidden` it contains.

use crate::model::{Lifecycle, LifecycleCategory};

struct Class {
    /// Its checkpoint bit is the enum's, fixed forever, whatever the table's order (which is the
    /// match priority).
    category: LifecycleCategory,
    /// The category does not resolve by waiting (the KEP applies its failure timeout to image
    /// pull, admission and volume failures); the others may.
    terminal: bool,
    patterns: &'static [Pattern],
}

/// One substring; the `reason` of a warning is the pattern that matched.
struct Pattern {
    text: &'static str,
    /// The message must start with this too (`""`: anywhere).
    starts: &'static str,
    /// This pattern's own answer where it differs from its category's.
    terminal: Option<bool>,
}

const fn any(text: &'static str) -> Pattern {
    Pattern {
        text,
        starts: "",
        terminal: None,
    }
}

const TABLE: &[Class] = &[
    // A pod refused for the namespace's ResourceQuota (`pods "…" is forbidden: exceeded quota:
    // …`), or the quota's own short-lived conflicts: Argo treats exactly these as transient and
    // keeps trying to create the pod (`isExceededQuotaErr`, `isResourceQuotaConflictErr`,
    // `isResourceQuotaTimeoutErr` through `IsTransientErr`); it resolves when other pods end.
    Class {
        category: LifecycleCategory::Quota,
        terminal: false,
        patterns: &[
            any("exceeded quota"),
            any("Operation cannot be fulfilled on resourcequota"),
            any("resource quota evaluation timed out"),
        ],
    },
    // The kubelet's waiting reasons for images (`pkg/kubelet/images/types.go`, the CRI's
    // `RegistryUnavailable` and `SignatureValidationFailed`). The kubelet retries for ever; only
    // a pushed image, a new pull secret or a registry back up fixes it.
    Class {
        category: LifecycleCategory::ImagePull,
        terminal: true,
        patterns: &[
            any("ImagePullBackOff"),
            any("ErrImagePull"),
            any("ErrImageNeverPull"),
            any("InvalidImageName"),
            any("ImageInspectError"),
            any("RegistryUnavailable"),
            any("SignatureValidationFailed"),
            any("Back-off pulling image"),
        ],
    },
    // A pod creation the API server refused (PodSecurity, LimitRange, a missing service
    // account, a policy webhook). By default Argo marks such a node Error, not Pending; it stays
    // Pending only where `TRANSIENT_ERROR_PATTERN` makes the error transient (Argo >= 3.0).
    // `is forbidden` counts only in the API server's `pods "<name>" is forbidden: …`, not inside
    // a kubelet message.
    Class {
        category: LifecycleCategory::Admission,
        terminal: true,
        patterns: &[
            Pattern {
                text: "is forbidden",
                starts: "pods \"",
                terminal: None,
            },
            any("admission webhook"),
        ],
    },
    // The scheduler's volume binding (`pkg/scheduler/framework/plugins/volumebinding`), inside
    // `Unschedulable: …`. `unbound immediate PersistentVolumeClaims` also shows for seconds on
    // healthy runs while a provisioner creates the volume.
    Class {
        category: LifecycleCategory::Volume,
        terminal: true,
        patterns: &[
            any("unbound immediate PersistentVolumeClaims"),
            any("didn't find available persistent volumes to bind"),
            any("had volume node affinity conflict"),
            any("bound to non-existent persistentvolume"),
        ],
    },
    // The PodScheduled condition's `Unschedulable` (`Insufficient cpu`, taints, selectors): it
    // may resolve when capacity frees up or the autoscaler adds a node.
    Class {
        category: LifecycleCategory::Scheduling,
        terminal: false,
        patterns: &[any("Unschedulable")],
    },
    // The kubelet's container creation reasons (`pkg/kubelet/kuberuntime`). A missing Secret or
    // ConfigMap (`CreateContainerConfigError`) keeps the pod Pending until someone creates it:
    // nothing retries or fails it, so it does not fix itself.
    Class {
        category: LifecycleCategory::Runtime,
        terminal: false,
        patterns: &[
            Pattern {
                text: "CreateContainerConfigError",
                starts: "",
                terminal: Some(true),
            },
            any("CreateContainerError"),
            any("RunContainerError"),
            any("PreStartHookError"),
        ],
    },
    // Argo >= 4.0 with `failedPodRestart` re-creates a pod that failed before its main container
    // ran and sets the node Pending again: `Pod auto-restarting due to <Reason>: <message>`
    // (`Evicted`, `NodeShutdown`, `NodeAffinity`, `UnexpectedAdmissionError`; `pod_restart.go`).
    Class {
        category: LifecycleCategory::Node,
        terminal: false,
        patterns: &[any("Evicted"), any("Pod auto-restarting due to")],
    },
];

/// Every category, in table order, with whether it is terminal and its patterns as the docs
/// write them (`` `is forbidden` (in a message starting `pods "`) ``).
pub fn categories() -> impl Iterator<Item = (&'static str, bool, Vec<String>)> {
    TABLE.iter().map(|c| {
        let patterns = c
            .patterns
            .iter()
            .map(|p| {
                let mut text = format!("`{}`", p.text);
                if !p.starts.is_empty() {
                    text.push_str(&format!(" (in a message starting `{}`)", p.starts));
                }
                if let Some(terminal) = p.terminal {
                    text.push_str(&format!(" (Terminal {terminal})"));
                }
                text
            })
            .collect();
        (c.category.as_str(), c.terminal, patterns)
    })
}

/// Classifies the message of a Pending pod node. `None` for the normal start-up messages every
/// pod shows (`PodInitializing`, `ContainerCreating`) and for messages no pattern matches.
pub fn classify(message: &str) -> Option<Lifecycle> {
    let trimmed = message.trim();
    // Exact, case-insensitive, as kubeflow/pipelines PR #13516 `transientNodeMessages`: every KFP
    // pod passes through PodInitializing because of the launcher init container.
    if trimmed.is_empty()
        || trimmed.eq_ignore_ascii_case("PodInitializing")
        || trimmed.eq_ignore_ascii_case("ContainerCreating")
    {
        return None;
    }
    TABLE.iter().find_map(|class| {
        let pattern = class
            .patterns
            .iter()
            .find(|p| trimmed.starts_with(p.starts) && trimmed.contains(p.text))?;
        Some(Lifecycle {
            category: class.category,
            reason: pattern.text,
            message: trimmed.to_owned(),
            terminal: pattern.terminal.unwrap_or(class.terminal),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn classifies_the_known_messages() {
        let cases = [
            (
                "ImagePullBackOff: Back-off pulling image \"ghcr.io/x/y:v1\"",
                "ImagePull",
                "ImagePullBackOff",
                true,
            ),
            (
                "ErrImagePull: rpc error: not found",
                "ImagePull",
                "ErrImagePull",
                true,
            ),
            (
                "Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                "Scheduling",
                "Unschedulable",
                false,
            ),
            (
                "Unschedulable: 0/3 nodes are available: 3 pod has unbound immediate PersistentVolumeClaims.",
                "Volume",
                "unbound immediate PersistentVolumeClaims",
                true,
            ),
            (
                "pods \"train\" is forbidden: violates PodSecurity \"restricted\"",
                "Admission",
                "is forbidden",
                true,
            ),
            // Nothing retries it: the pod waits until the Secret exists.
            (
                "CreateContainerConfigError: secret \"s3\" not found",
                "Runtime",
                "CreateContainerConfigError",
                true,
            ),
            // Not `is forbidden` (Admission): that is the API server's refusal of a pod.
            (
                "CreateContainerConfigError: secrets \"s3\" is forbidden: User cannot get resource",
                "Runtime",
                "CreateContainerConfigError",
                true,
            ),
            // A gRPC deadline inside a kubelet message is no deadline of the task.
            (
                "CreateContainerError: context deadline exceeded: rpc error: code = DeadlineExceeded",
                "Runtime",
                "CreateContainerError",
                false,
            ),
            (
                "Pod auto-restarting due to Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 52Mi.",
                "Node",
                "Evicted",
                false,
            ),
            (
                "Pod auto-restarting due to NodeShutdown: Pod was rejected: Node is shutting, evicting pods",
                "Node",
                "Pod auto-restarting due to",
                false,
            ),
            (
                "Unschedulable: 0/3 nodes are available: 3 node(s) didn't find available persistent volumes to bind.",
                "Volume",
                "didn't find available persistent volumes to bind",
                true,
            ),
            (
                "ImageInspectError: Failed to inspect image \"x\": rpc error",
                "ImagePull",
                "ImageInspectError",
                true,
            ),
            (
                "Operation cannot be fulfilled on resourcequotas \"compute\": the object has been modified",
                "Quota",
                "Operation cannot be fulfilled on resourcequota",
                false,
            ),
            // Argo's message for a pod the namespace's quota refused (operator_test.go 11885).
            (
                "test1.test \"test\" is forbidden: exceeded quota",
                "Quota",
                "exceeded quota",
                false,
            ),
            (
                "pods \"train\" is forbidden: exceeded quota: compute-resources, requested: limits.memory=8Gi, used: limits.memory=60Gi, limited: limits.memory=64Gi",
                "Quota",
                "exceeded quota",
                false,
            ),
        ];
        for (message, category, reason, terminal) in cases {
            let got = classify(message).unwrap_or_else(|| panic!("{message} not classified"));
            assert_eq!(
                (got.category.as_str(), got.reason, got.terminal),
                (category, reason, terminal),
                "{message}"
            );
            assert_eq!(got.message, message);
        }
    }

    /// The bits persisted in checkpoints: until 2026-12-01 a category's table position (six
    /// categories), then Quota's 6. Pinned, with the names (the name is part of a warning's id).
    #[test]
    fn category_bits_are_those_checkpoints_hold() {
        use crate::model::LifecycleCategory::{self, *};
        let pinned = [
            (ImagePull, 0, "ImagePull"),
            (Admission, 1, "Admission"),
            (Volume, 2, "Volume"),
            (Scheduling, 3, "Scheduling"),
            (Runtime, 4, "Runtime"),
            (Node, 5, "Node"),
            (Quota, 6, "Quota"),
        ];
        for (category, bit, name) in pinned {
            assert_eq!((category.bit(), category.as_str()), (bit, name));
        }
        assert_eq!(LifecycleCategory::ALL.len(), pinned.len());
        let tabled: std::collections::BTreeSet<LifecycleCategory> =
            super::TABLE.iter().map(|c| c.category).collect();
        assert_eq!(
            tabled.len(),
            super::TABLE.len(),
            "a category once in the table"
        );
    }

    #[test]
    fn ignores_start_up_and_unknown_messages() {
        for message in [
            "PodInitializing",
            " containercreating ",
            "",
            // Argo's own throttles and locks, and API server hiccups: they pass by themselves.
            "resource creation rate-limit reached",
            "Waiting for argo/ConfigMap/my-config/workflow lock. Lock status: 0/1",
            "Internal error occurred: failed calling webhook \"validate.kyverno.svc\": failed to call webhook: dial tcp 10.0.0.1:443: connect: connection refused",
            // Terminated-container reasons never describe a Pending pod.
            "main: OOMKilled (exit code 137)",
        ] {
            assert_eq!(classify(message), None, "{message:?}");
        }
    }
}
