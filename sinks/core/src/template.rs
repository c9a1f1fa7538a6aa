//! Destination templates: `kfp.{namespace}.{type}`, `/hooks/{pipeline}`. Parsed once at start
//! (unknown names are a configuration error), rendered per event from its attributes, each value
//! passed through the sink's own escaping (a topic, a subject token, a URL path segment).

use crate::Event;
use cloudevents::AttributesReader;
use cloudevents::event::ExtensionValue;

/// What a missing value renders as (a plain Argo workflow has no `kfprunid` or `pipeline`).
pub const MISSING: &str = "_";

/// A value a template or filter can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Namespace,
    Workflow,
    /// The short type, `run.succeeded` or `task.failed` (the last two segments of `type`).
    Type,
    KfpRunId,
    Pipeline,
}

impl Var {
    pub const NAMES: [(&'static str, Var); 5] = [
        ("namespace", Var::Namespace),
        ("workflow", Var::Workflow),
        ("type", Var::Type),
        ("kfprunid", Var::KfpRunId),
        ("pipeline", Var::Pipeline),
    ];

    pub fn parse(name: &str) -> Option<Var> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// This variable's value on `event`, if it has one.
    pub fn value(self, event: &Event) -> Option<&str> {
        let ext = |name| match event.extension(name) {
            Some(ExtensionValue::String(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        };
        match self {
            Var::Namespace => ext("namespace"),
            Var::Workflow => ext("workflow"),
            Var::KfpRunId => ext("kfprunid"),
            Var::Pipeline => ext("pipeline"),
            Var::Type => Some(short_type(event.ty())),
        }
    }
}

/// Appends `value` as one token of a dotted name (a NATS subject, an AMQP routing key): the
/// `special` characters (the name's separator and wildcards), whitespace and control characters
/// become `_`, an empty value becomes `_`, and `{type}` keeps its dot — it is two tokens on
/// purpose, so consumers can match `*.task.failed`.
pub fn escape_token(var: Var, value: &str, special: &[char], out: &mut String) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    for c in value.chars() {
        let keep_dot = var == Var::Type && c == '.';
        let replace = special.contains(&c) || c.is_whitespace() || c.is_control();
        out.push(if replace && !keep_dot { '_' } else { c });
    }
}

/// `org.kubeflow.pipelines.task.failed` → `task.failed`; a CDEvent's
/// `dev.cdevents.taskrun.finished.0.3.0` → `taskrun.finished` (its subject and predicate, without
/// the version), `dev.cdeventsx.kfp-taskrun.skipped.0.1.0` → `kfp-taskrun.skipped`.
pub fn short_type(ty: &str) -> &str {
    for prefix in ["dev.cdevents.", "dev.cdeventsx."] {
        if let Some(rest) = ty.strip_prefix(prefix) {
            let mut parts = rest.splitn(3, '.');
            if let (Some(subject), Some(predicate)) = (parts.next(), parts.next()) {
                return &rest[..subject.len() + 1 + predicate.len()];
            }
        }
    }
    let mut dots = ty.rmatch_indices('.').map(|(i, _)| i);
    match (dots.next(), dots.next()) {
        (Some(_), Some(second)) => &ty[second + 1..],
        _ => ty,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A parsed destination template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown template variable {{{0}}}; known: {{namespace}} {{workflow}} {{type}} {{kfprunid}} {{pipeline}}"
    )]
    Unknown(String),
    #[error("unclosed '{{' in template")]
    Unclosed,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or(TemplateError::Unclosed)? + open;
            let name = &rest[open + 1..close];
            let var = Var::parse(name).ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
            pieces.push(Piece::Var(var));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self { pieces })
    }

    /// True when the template names no variable: it renders to the same text for every event.
    pub fn is_constant(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Text(_)))
    }

    /// Renders for a stand-in event with no extensions (short type `run.started`): what a sink
    /// checks at start to refuse a template that cannot make a valid destination.
    pub fn render_sample(&self, escape: impl Fn(Var, &str, &mut String)) -> String {
        use cloudevents::{EventBuilder, EventBuilderV10};
        let sample = EventBuilderV10::new()
            .id("sample")
            .source("/sample")
            .ty("sample.run.started")
            .build()
            .unwrap_or_default();
        self.render(&sample, escape)
    }

    /// Renders for `event`; each value goes through `escape` (which appends to the output and
    /// may treat variables differently: `{type}` is two dot-separated tokens by design).
    pub fn render(&self, event: &Event, escape: impl Fn(Var, &str, &mut String)) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(var) => escape(*var, var.value(event).unwrap_or(MISSING), &mut out),
            }
        }
        out
    }
}

/// Shell-style `*` globs, e.g. `task.*`, `team-*`, `*`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty();
    };
    for middle in parts {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn event() -> Event {
        EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("org.kubeflow.pipelines.task.failed")
            .extension("namespace", "team-a")
            .extension("workflow", "wf-1")
            .build()
            .expect("event")
    }

    #[test]
    fn renders_values_and_placeholders() {
        let t = Template::parse("kfp.{namespace}.{type}.{pipeline}").expect("parses");
        let out = t.render(&event(), |_, v, out| out.push_str(v));
        assert_eq!(out, "kfp.team-a.task.failed._");
        assert!(!t.is_constant());
        assert!(Template::parse("plain").expect("parses").is_constant());
    }

    #[test]
    fn rejects_unknown_and_unclosed() {
        assert_eq!(
            Template::parse("a.{nope}"),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert_eq!(Template::parse("a.{type"), Err(TemplateError::Unclosed));
    }

    #[test]
    fn values_become_single_tokens() {
        let render = |var, value| {
            let mut out = String::new();
            escape_token(var, value, &['.', '*', '>'], &mut out);
            out
        };
        assert_eq!(render(Var::Namespace, "team.a b"), "team_a_b");
        assert_eq!(render(Var::Pipeline, "x*>y"), "x__y");
        assert_eq!(render(Var::Type, "task.failed"), "task.failed");
        assert_eq!(render(Var::Workflow, ""), "_");
    }

    #[test]
    fn short_types() {
        assert_eq!(
            short_type("org.kubeflow.pipelines.run.started"),
            "run.started"
        );
        assert_eq!(short_type("x.y"), "x.y");
        assert_eq!(
            short_type("dev.cdevents.taskrun.finished.0.3.0"),
            "taskrun.finished"
        );
        assert_eq!(
            short_type("dev.cdeventsx.kfp-taskrun.skipped.0.1.0"),
            "kfp-taskrun.skipped"
        );
        assert_eq!(short_type("plain"), "plain");
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "anything", true),
            ("task.*", "task.failed", true),
            ("task.*", "run.failed", false),
            ("*.failed", "run.failed", true),
            ("team-*-prod", "team-a-prod", true),
            ("team-*-prod", "team-a-dev", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
        ] {
            assert_eq!(glob_match(p, t), want, "{p} vs {t}");
        }
    }
}
