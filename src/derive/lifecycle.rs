//! KEP-12843 pod lifecycle classification: which Pending-pod messages mean the task is stuck, in
//! which category, and whether the category fixes itself.
//!
//! The table is ordered and the first substring match wins, as in kubeflow/pipelines PR #13863
//! (`podFailurePatterns`); patterns come from that PR, the KEP's "Structured Message
//! Classification" table and closed PR #13097. Volume comes before scheduling because a missing
//! PVC surfaces inside an `Unschedulable: …` message.

use crate::model::Lifecycle;

struct Class {
    category: &'static str,
    /// The category's bit in a checkpoint mark ([`crate::model::Slot::bit`]): fixed forever,
    /// whatever the table's order (which is the match priority), or persisted marks would mean
    /// another category after an upgrade.
    bit: u8,
    /// Image pull, admission and volume failures are user errors that do not resolve by waiting
    /// (the KEP applies its failure timeout to exactly these); the others may.
    terminal: bool,
    patterns: &'static [&'static str],
}

const TABLE: &[Class] = &[
    // A pod refused for the namespace's ResourceQuota (`… is forbidden: exceeded quota`): Argo
    // treats exactly this as transient and keeps trying to create the pod (`isExceededQuotaErr`
    // in `util/errors/errors.go`, through `IsTransientErr`); it resolves when other pods end.
    // Before Admission, whose `is forbidden` it contains.
    Class {
        category: "Quota",
        bit: 6,
        terminal: false,
        patterns: &["exceeded quota"],
    },
    Class {
        category: "ImagePull",
        bit: 0,
        terminal: true,
        patterns: &[
            "ImagePullBackOff",
            "ErrImagePull",
            "ErrImageNeverPull",
            "InvalidImageName",
            "Back-off pulling image",
        ],
    },
    Class {
        category: "Admission",
        bit: 1,
        terminal: true,
        patterns: &["is forbidden", "admission webhook"],
    },
    Class {
        category: "Volume",
        bit: 2,
        terminal: true,
        patterns: &[
            "unbound immediate PersistentVolumeClaims",
            "FailedMount",
            "FailedAttachVolume",
        ],
    },
    Class {
        category: "Scheduling",
        bit: 3,
        terminal: false,
        patterns: &["Unschedulable", "FailedScheduling", "Insufficient "],
    },
    Class {
        category: "Runtime",
        bit: 4,
        terminal: false,
        patterns: &[
            "CrashLoopBackOff",
            "OOMKilled",
            "DeadlineExceeded",
            "ContainerCannotRun",
            "CreateContainerConfigError",
            "CreateContainerError",
            "RunContainerError",
            "PreStartHookError",
            "PostStartHookError",
        ],
    },
    Class {
        category: "Node",
        bit: 5,
        terminal: false,
        patterns: &[
            "NodeLost",
            "PreemptionByScheduler",
            "Preempted",
            "Evicted",
            "TerminationByKubelet",
            "ContainerStatusUnknown",
        ],
    },
];

/// A category's fixed bit (see `Class::bit`).
pub fn bit(category: &str) -> Option<u8> {
    TABLE.iter().find(|c| c.category == category).map(|c| c.bit)
}

/// Every category, in table order (for docs and metrics).
pub fn categories() -> impl Iterator<Item = (&'static str, bool, &'static [&'static str])> {
    TABLE.iter().map(|c| (c.category, c.terminal, c.patterns))
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
        let reason = class.patterns.iter().find(|p| trimmed.contains(*p))?;
        Some(Lifecycle {
            category: class.category,
            reason,
            message: trimmed.to_owned(),
            terminal: class.terminal,
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
            (
                "CreateContainerConfigError: secret \"s3\" not found",
                "Runtime",
                "CreateContainerConfigError",
                false,
            ),
            (
                "CrashLoopBackOff: back-off 5m0s restarting failed container",
                "Runtime",
                "CrashLoopBackOff",
                false,
            ),
            ("Pod was Preempted", "Node", "Preempted", false),
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
                (got.category, got.reason, got.terminal),
                (category, reason, terminal),
                "{message}"
            );
            assert_eq!(got.message, message);
        }
    }

    /// The bits persisted in checkpoints before the table had a fixed bit per category were
    /// the table positions of the time.
    #[test]
    fn category_bits_are_those_checkpoints_hold() {
        let before = [
            "ImagePull",
            "Admission",
            "Volume",
            "Scheduling",
            "Runtime",
            "Node",
        ];
        for (position, category) in before.iter().enumerate() {
            assert_eq!(super::bit(category), Some(position as u8), "{category}");
        }
        let bits: std::collections::BTreeSet<u8> = super::TABLE.iter().map(|c| c.bit).collect();
        assert_eq!(bits.len(), super::TABLE.len(), "a bit per category");
    }

    #[test]
    fn ignores_start_up_and_unknown_messages() {
        for message in [
            "PodInitializing",
            " containercreating ",
            "",
            "resource creation rate-limit reached",
        ] {
            assert_eq!(classify(message), None, "{message:?}");
        }
    }
}
