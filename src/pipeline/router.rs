//! The router: which events a lane receives ([`Filter`]: globs over type, namespace, pipeline),
//! and the opened sinks with their filters ([`Route`]).

use cloudevents::AttributesReader as _;
use cloudevents::Event;
use sink_core::Sink;
use sink_core::template::{Var, glob_match, short_type};
use std::sync::Arc;

/// Which events a sink receives. An empty list selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Globs over the short type (`task.*`, `run.failed`) or the full `type`.
    pub types: Vec<String>,
    pub namespaces: Vec<String>,
    pub pipelines: Vec<String>,
}

impl Filter {
    pub fn matches(&self, event: &Event) -> bool {
        let any = |globs: &[String], values: &[&str]| {
            globs.is_empty()
                || globs
                    .iter()
                    .any(|g| values.iter().any(|v| glob_match(g, v)))
        };
        let ty = event.ty();
        let value = |var: Var| var.value(event).unwrap_or("");
        any(&self.types, &[short_type(ty), ty])
            && any(&self.namespaces, &[value(Var::Namespace)])
            && any(&self.pipelines, &[value(Var::Pipeline)])
    }
}

/// A sink and what it receives.
pub struct Route {
    /// The name in logs and counters.
    pub name: String,
    pub sink: Arc<dyn Sink>,
    pub filter: Filter,
    /// The bridge's events, or CDEvents made from them.
    pub format: crate::encode::cdevents::Format,
}
