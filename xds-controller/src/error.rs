//! Diagnostics about configuration: what is wrong, in which file, resource
//! and field. A resource with an error is left out; the rest is served.

use crate::resources::Source;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Informational: something was read and has no effect here.
    Note,
    /// Served, but probably not what the author meant.
    Warning,
    /// Left out of the served configuration.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `Kind namespace/name`, when the problem is in one resource.
    pub resource: Option<String>,
    pub source: Option<Source>,
    /// Path of the field, e.g. `spec.rules[2].backendRefs[0].name`.
    pub field: Option<String>,
    pub message: String,
    /// For a policy's diagnostic: how it attaches (or fails to attach) to
    /// one of its targets, for the policy's status.
    pub attachment: Option<Box<Attachment>>,
}

/// What a policy diagnostic says about one target (Gateway API policy
/// status reasons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub reason: AttachmentReason,
    pub target: AttachmentTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentReason {
    /// Another policy of the same kind on the same target wins.
    Conflicted,
    /// Applies to the target, but a policy on a more specific target
    /// (a route of this Gateway) overrides it there.
    Overridden,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentTarget {
    /// `namespace/name` of a Gateway.
    Gateway(String),
    /// `namespace/name` of an AIGatewayRoute (or its HTTPRoute).
    Route(String),
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            resource: None,
            source: None,
            field: None,
            message: message.into(),
            attachment: None,
        }
    }
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }
    pub fn note(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Note,
            ..Diagnostic::error(message)
        }
    }
    /// Names the resource at fault, unless a more specific one already is.
    pub fn at(mut self, resource: String, source: &Source) -> Self {
        if self.resource.is_none() {
            self.resource = Some(resource);
            self.source = Some(source.clone());
        }
        self
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn attachment(mut self, reason: AttachmentReason, target: AttachmentTarget) -> Self {
        self.attachment = Some(Box::new(Attachment { reason, target }));
        self
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}: ")?;
        if let Some(source) = &self.source {
            write!(f, "{source}: ")?;
        }
        if let Some(resource) = &self.resource {
            write!(f, "{resource}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(|d| d.severity == Severity::Error)
}

/// Why an upstream credential could not be minted or refreshed at run
/// time. The message never holds a secret: callers put in what failed and
/// the provider's error code, never a token, key or raw response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError(pub String);

impl CredentialError {
    pub fn new(message: impl Into<String>) -> Self {
        CredentialError(message.into())
    }
}

impl std::fmt::Display for CredentialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CredentialError {}
