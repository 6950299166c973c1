//! `aigw validate`: checks Envoy AI Gateway resources (AIGatewayRoute,
//! AIServiceBackend, BackendSecurityPolicy, MCPRoute) against the rules the
//! Kubernetes API server enforces for them (the CRDs' OpenAPI schemas and
//! CEL rules), so a file gets the verdict `kubectl apply` would give it,
//! with the same field path and reason.
//!
//! Pure: a parsed document in, a verdict out. The rules concern fields the
//! typed resources in `resources.rs` do not model, so this works on the
//! untyped document.
//!
//! Messages follow the API server's format:
//! `Kind.aigateway.envoyproxy.io "name" is invalid: <path>: <reason>`, with
//! several errors as `[e1, e2]`. A required string the CRD declares without
//! `omitempty` is checked as `""` when absent, as the API server sees it
//! when the object comes from a Go client (so a missing `spec.type` is an
//! `Unsupported value: ""`, a missing `clientID` is "at least 1 chars long").
//!
//! Not covered: unknown fields (strict field validation) and the rules of
//! kinds from other API groups, which are reported as not validated.

mod backend;
mod cli;
mod mcp;
mod policy;
mod route;
#[cfg(test)]
mod tests;

pub use cli::command;
use serde_json::{Map, Value};
use std::fmt;

pub const GROUP: &str = "aigateway.envoyproxy.io";
const VERSIONS: &[&str] = &["v1alpha1", "v1beta1"];

/// Why one field is invalid, in the API server's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `Required value`
    Required,
    /// `Required value: <detail>`
    RequiredWith(&'static str),
    /// `Invalid value: <value>: <detail>`; `value` is already quoted
    /// (`"object"`, `"array"` for CEL rules).
    Invalid { value: String, detail: String },
    /// `Unsupported value: "<value>": supported values: "A", "B"`
    NotSupported {
        value: String,
        supported: &'static [&'static str],
    },
    /// `Too many: <actual>: must have at most <max> items`
    TooMany { actual: usize, max: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: Reason,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path)?;
        match &self.reason {
            Reason::Required => f.write_str("Required value"),
            Reason::RequiredWith(detail) => write!(f, "Required value: {detail}"),
            Reason::Invalid { value, detail } => write!(f, "Invalid value: {value}: {detail}"),
            Reason::NotSupported { value, supported } => {
                write!(f, "Unsupported value: {}: supported values: ", quote(value))?;
                let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
                f.write_str(&list.join(", "))
            }
            Reason::TooMany { actual, max } => {
                write!(f, "Too many: {actual}: must have at most {max} items")
            }
        }
    }
}

/// The verdict on one YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// The whole message, as the API server would print it.
    Invalid(String),
    /// Not one of the kinds checked here (e.g. `Backend`, `Gateway`).
    NotValidated(String),
}

impl Verdict {
    pub fn is_invalid(&self) -> bool {
        matches!(self, Verdict::Invalid(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Valid => f.write_str("valid"),
            Verdict::Invalid(message) => write!(f, "invalid: {message}"),
            Verdict::NotValidated(kind) => write!(f, "not validated (kind {kind})"),
        }
    }
}

/// Validates every document of a YAML stream. Empty documents are skipped;
/// a syntax error ends the stream (it cannot be resynchronized).
pub fn validate_str(text: &str) -> Vec<Verdict> {
    use serde::Deserialize;
    let mut verdicts = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(value) => verdicts.push(validate_yaml(&value)),
            Err(e) => {
                verdicts.push(Verdict::Invalid(format!("not valid YAML: {e}")));
                break;
            }
        }
    }
    verdicts
}

/// Validates one parsed YAML document.
pub fn validate_yaml(document: &serde_yaml::Value) -> Verdict {
    match serde_json::to_value(document) {
        Ok(value) => validate_value(&value),
        Err(e) => Verdict::Invalid(format!("not a Kubernetes object: {e}")),
    }
}

/// Validates one document as JSON.
pub fn validate_value(document: &Value) -> Verdict {
    let Some(object) = document.as_object() else {
        return Verdict::Invalid("not a Kubernetes object: expected a mapping".into());
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    if kind.is_empty() {
        return Verdict::Invalid("Object 'Kind' is missing".into());
    }
    if api_version.is_empty() {
        return Verdict::Invalid(format!("Object 'apiVersion' is missing in kind {kind}"));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let check: fn(&Map<String, Value>, &mut Checker) = match kind {
        "AIGatewayRoute" => route::check,
        "AIServiceBackend" => backend::check,
        "BackendSecurityPolicy" => policy::check,
        "MCPRoute" => mcp::check,
        _ => return Verdict::NotValidated(kind.to_string()),
    };
    if group != GROUP {
        return Verdict::NotValidated(format!("{kind} of {api_version}"));
    }
    if !VERSIONS.contains(&version) {
        return Verdict::Invalid(format!(
            "no matches for kind \"{kind}\" in version \"{api_version}\""
        ));
    }
    let mut checker = Checker::default();
    let metadata = checker.object(object.get("metadata"), "metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    check_name(name, &mut checker);
    let empty = Map::new();
    let spec = checker.object(object.get("spec"), "spec").unwrap_or(&empty);
    check(spec, &mut checker);
    if checker.errors.is_empty() {
        return Verdict::Valid;
    }
    let errors: Vec<String> = checker.errors.iter().map(ToString::to_string).collect();
    let list = match errors.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    Verdict::Invalid(format!("{kind}.{GROUP} \"{name}\" is invalid: {list}"))
}

fn check_name(name: &str, checker: &mut Checker) {
    if name.is_empty() {
        checker.push(
            "metadata.name",
            Reason::RequiredWith("name or generateName is required"),
        );
        return;
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        checker.push(
            "metadata.name",
            Reason::Invalid {
                value: quote(name),
                detail: "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                         characters, '-' or '.', and must start and end with an alphanumeric \
                         character (e.g. 'example.com', regex used for validation is \
                         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                    .into(),
            },
        );
    }
}

/// Go's `%q` for the strings that appear here.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a field is set, as CEL's `has()` sees it (null counts as unset:
/// the API server prunes it).
pub(crate) fn has(object: &Map<String, Value>, key: &str) -> bool {
    object.get(key).is_some_and(|v| !v.is_null())
}

/// Collects field errors; the accessors report wrong JSON types.
#[derive(Default)]
pub(crate) struct Checker {
    pub errors: Vec<FieldError>,
}

impl Checker {
    pub fn push(&mut self, path: &str, reason: Reason) {
        self.errors.push(FieldError {
            path: path.to_string(),
            reason,
        });
    }

    /// A CEL rule failed on an object at `path`.
    pub fn rule_on_object(&mut self, path: &str, message: &str) {
        self.push(
            path,
            Reason::Invalid {
                value: quote("object"),
                detail: message.into(),
            },
        );
    }

    /// A CEL rule failed on a list at `path`.
    pub fn rule_on_array(&mut self, path: &str, message: &str) {
        self.push(
            path,
            Reason::Invalid {
                value: quote("array"),
                detail: message.into(),
            },
        );
    }

    fn wrong_type(&mut self, path: &str, value: &Value, want: &str) {
        let got = type_name(value);
        self.push(
            path,
            Reason::Invalid {
                value: quote(got),
                detail: format!("{path} in body must be of type {want}: {}", quote(got)),
            },
        );
    }

    /// The object at `path`, if set; a non-object is a type error.
    pub fn object<'a>(
        &mut self,
        value: Option<&'a Value>,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                self.wrong_type(path, other, "object");
                None
            }
        }
    }

    /// The list at `path`, if set; a non-list is a type error.
    pub fn array<'a>(&mut self, value: Option<&'a Value>, path: &str) -> Option<&'a [Value]> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items),
            Some(other) => {
                self.wrong_type(path, other, "array");
                None
            }
        }
    }

    /// The string at `path`, if set; a non-string is a type error.
    pub fn string<'a>(&mut self, value: Option<&'a Value>, path: &str) -> Option<&'a str> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                self.wrong_type(path, other, "string");
                None
            }
        }
    }

    /// A list field with `maxItems` (and `minItems`, 0 for none).
    pub fn items<'a>(
        &mut self,
        object: &'a Map<String, Value>,
        key: &str,
        path: &str,
        min: usize,
        max: usize,
    ) -> &'a [Value] {
        let items = self.array(object.get(key), path).unwrap_or(&[]);
        if items.len() > max {
            self.push(
                path,
                Reason::TooMany {
                    actual: items.len(),
                    max,
                },
            );
        }
        if min > 0 && items.len() < min && has(object, key) {
            self.push(
                path,
                Reason::Invalid {
                    value: items.len().to_string(),
                    detail: format!("{path} in body should have at least {min} items"),
                },
            );
        }
        items
    }

    /// A required object field.
    pub fn required_object<'a>(
        &mut self,
        object: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        if !has(object, key) {
            self.push(path, Reason::Required);
            return None;
        }
        self.object(object.get(key), path)
    }

    /// A required list field.
    pub fn required_list(&mut self, object: &Map<String, Value>, key: &str, path: &str) {
        if !has(object, key) {
            self.push(path, Reason::Required);
        }
    }

    /// A string field with an enum; absent counts as `""` when `required`.
    pub fn enumeration(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
        path: &str,
        supported: &'static [&'static str],
        required: bool,
    ) -> Option<String> {
        let value = match self.string(object.get(key), path) {
            Some(s) => s,
            None if required && !has(object, key) => "",
            None => return None,
        };
        if !supported.contains(&value) {
            self.push(
                path,
                Reason::NotSupported {
                    value: value.to_string(),
                    supported,
                },
            );
        }
        Some(value.to_string())
    }

    /// A string field with `minLength`; absent counts as `""` when `required`.
    pub fn min_length(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
        path: &str,
        min: usize,
        required: bool,
    ) {
        let value = match self.string(object.get(key), path) {
            Some(s) => s,
            None if required && !has(object, key) => "",
            None => return,
        };
        if value.chars().count() < min {
            self.push(
                path,
                Reason::Invalid {
                    value: quote(value),
                    detail: format!("{path} in body should be at least {min} chars long"),
                },
            );
        }
    }

    /// A string field with `maxLength`.
    pub fn max_length(&mut self, object: &Map<String, Value>, key: &str, path: &str, max: usize) {
        if let Some(value) = self.string(object.get(key), path) {
            if value.chars().count() > max {
                self.push(
                    path,
                    Reason::Invalid {
                        value: quote(value),
                        detail: format!("{path} in body may not be more than {max} bytes"),
                    },
                );
            }
        }
    }
}

/// `self.all(ref, ref.kind == 'Gateway')` on Gateway API ParentReferences,
/// after the API server applied the default kind (`Gateway`).
pub(crate) fn check_parent_refs(items: &[Value], path: &str, checker: &mut Checker) {
    let mut all_gateways = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let Some(reference) = checker.object(Some(item), &item_path) else {
            continue;
        };
        checker.min_length(reference, "name", &format!("{item_path}.name"), 1, true);
        let kind = reference
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Gateway");
        if kind != "Gateway" {
            all_gateways = false;
        }
    }
    if !all_gateways {
        checker.rule_on_array(path, "only Gateway is supported");
    }
}
