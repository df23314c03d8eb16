//! Checking records against the official ECS field list and OCSF class definitions
//! (tests/data/schemas, fetched from the published schemas, not written by hand).

use std::collections::BTreeMap;
use std::io::Read as _;

use serde_json::{Map, Value};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub struct Ecs {
    fields: Map<String, Value>,
}

impl Ecs {
    pub fn load() -> Self {
        let Value::Object(fields) = load("ecs_flat-9.4.0.json.gz") else {
            panic!("ecs_flat is an object keyed by field name")
        };
        Self { fields }
    }

    /// Every problem with one ECS document: fields ECS does not define (outside the
    /// custom `probectl.*` namespace), values of the wrong JSON type, missing required
    /// fields, and `event.*` values outside ECS's allowed values.
    pub fn problems(&self, doc: &Value) -> Vec<String> {
        let mut leaves = BTreeMap::new();
        flatten("", doc, &mut leaves);
        let mut out = Vec::new();
        for (name, def) in &self.fields {
            if def["required"] == true && !leaves.contains_key(name.as_str()) {
                out.push(format!("required field {name} is missing"));
            }
        }
        for (name, value) in &leaves {
            if name == "probectl" || name.starts_with("probectl.") {
                continue;
            }
            let Some(def) = self.fields.get(name) else {
                out.push(format!("{name} is not an ECS field"));
                continue;
            };
            let ty = def["type"].as_str().unwrap_or("");
            let is_array_field = def["normalize"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x == "array"));
            let values: Vec<&Value> = match value {
                Value::Array(items) => {
                    if !is_array_field {
                        out.push(format!(
                            "{name} is an array, but ECS does not normalize it to one"
                        ));
                    }
                    items.iter().collect()
                }
                v => vec![v],
            };
            for v in values {
                if !type_fits(ty, v) {
                    out.push(format!("{name}: {v} is not an ECS {ty}"));
                }
                if let Some(allowed) = def["allowed_values"].as_array()
                    && !allowed.iter().any(|a| a["name"] == *v)
                {
                    out.push(format!("{name}: {v} is not one of ECS's allowed values"));
                }
            }
        }
        // event.type must suit event.category.
        if let (Some(Value::Array(cats)), Some(Value::Array(types))) =
            (leaves.get("event.category"), leaves.get("event.type"))
        {
            let allowed = self.fields["event.category"]["allowed_values"]
                .as_array()
                .unwrap();
            for cat in cats {
                let expected = allowed
                    .iter()
                    .find(|a| a["name"] == *cat)
                    .and_then(|a| a["expected_event_types"].as_array());
                for t in types {
                    if expected.is_some_and(|e| !e.contains(t)) {
                        out.push(format!(
                            "event.type {t} is not expected with event.category {cat}"
                        ));
                    }
                }
            }
        }
        out
    }
}

/// Dotted names of leaf values; arrays of scalars are leaves, arrays of objects are
/// walked (ECS `nested` fields).
fn flatten<'a>(prefix: &str, v: &'a Value, out: &mut BTreeMap<String, &'a Value>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        Value::Null => {}
        _ => {
            out.insert(prefix.to_owned(), v);
        }
    }
}

fn type_fits(ty: &str, v: &Value) -> bool {
    match ty {
        "keyword" | "wildcard" | "constant_keyword" | "match_only_text" | "text" | "ip"
        | "version" => v.is_string(),
        "date" => v.is_string() || v.is_i64(),
        "long" | "integer" | "short" | "byte" | "unsigned_long" => v.is_i64() || v.is_u64(),
        "float" | "double" | "scaled_float" | "half_float" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" | "flattened" | "nested" => true,
        _ => false,
    }
}

pub struct Ocsf {
    schema: Value,
}

impl Ocsf {
    pub fn load() -> Self {
        Self {
            schema: load("ocsf-1.8.0.json.gz"),
        }
    }

    fn class(&self, uid: u64) -> Option<&Value> {
        self.schema["classes"]
            .as_object()?
            .values()
            .find(|c| c["uid"].as_u64() == Some(uid))
    }

    /// Every problem with one OCSF event: an unknown class, missing required
    /// attributes (profile-gated ones aside), attributes the class or object does not
    /// define, wrong types, enum values outside the definition, and `at_least_one`
    /// constraints not met, checked through every nested object.
    pub fn problems(&self, event: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let Some(class) = event["class_uid"].as_u64().and_then(|u| self.class(u)) else {
            return vec![format!(
                "class_uid {} is not an OCSF class",
                event["class_uid"]
            )];
        };
        self.check_object(
            class["name"].as_str().unwrap_or("?"),
            class,
            event,
            &mut out,
        );
        out
    }

    fn check_object(&self, at: &str, def: &Value, value: &Value, out: &mut Vec<String>) {
        let Some(attrs) = def["attributes"].as_object() else {
            out.push(format!("{at}: no attribute definitions"));
            return;
        };
        let Some(obj) = value.as_object() else {
            out.push(format!("{at}: {value} is not an object"));
            return;
        };
        for (name, a) in attrs {
            if a["requirement"] == "required"
                && a.get("profiles").is_none()
                && !obj.contains_key(name)
            {
                out.push(format!("{at}.{name} is required"));
            }
        }
        if let Some(groups) = def["constraints"]["at_least_one"].as_array()
            && !groups
                .iter()
                .any(|g| g.as_str().is_some_and(|g| obj.contains_key(g)))
        {
            out.push(format!("{at}: needs at least one of {groups:?}"));
        }
        for (name, v) in obj {
            if name == "unmapped" {
                continue;
            }
            let Some(a) = attrs.get(name) else {
                out.push(format!("{at}.{name} is not an attribute of {at}"));
                continue;
            };
            let here = format!("{at}.{name}");
            let items: Vec<&Value> = if a["is_array"] == true {
                match v.as_array() {
                    Some(items) => items.iter().collect(),
                    None => {
                        out.push(format!("{here} must be an array"));
                        continue;
                    }
                }
            } else {
                vec![v]
            };
            for item in items {
                self.check_value(&here, a, item, out);
            }
        }
    }

    fn check_value(&self, at: &str, a: &Value, v: &Value, out: &mut Vec<String>) {
        let ty = a["type"].as_str().unwrap_or("");
        if ty == "object_t" {
            let name = a["object_type"].as_str().unwrap_or("");
            match self.schema["objects"].get(name) {
                Some(def) => self.check_object(at, def, v, out),
                None => out.push(format!("{at}: unknown object type {name}")),
            }
            return;
        }
        let base = self.schema["dictionary"]["types"]["attributes"][ty]["type"]
            .as_str()
            .unwrap_or(ty);
        let fits = match (ty, base) {
            ("integer_t" | "long_t" | "timestamp_t" | "port_t", _)
            | (_, "integer_t" | "long_t") => v.is_i64() || v.is_u64(),
            ("float_t", _) | (_, "float_t") => v.is_number(),
            ("boolean_t", _) | (_, "boolean_t") => v.is_boolean(),
            ("json_t", _) => true,
            _ => v.is_string(),
        };
        if !fits {
            out.push(format!("{at}: {v} is not an OCSF {ty}"));
        }
        if let (Some(values), Some(n)) = (a["enum"].as_object(), v.as_i64())
            && !values.contains_key(&n.to_string())
        {
            out.push(format!("{at}: {n} is not in its enum"));
        }
    }
}

/// probectl's own JSON Schema (docs/schema), checked strictly: besides types,
/// required fields, enums and consts, a field the schema does not name is an error,
/// so a field added to the code without the schema cannot slip through.
pub struct NativeSchema {
    root: Value,
}

impl NativeSchema {
    pub fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/schema/probectl-record.schema.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Self {
            root: serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}")),
        }
    }

    pub fn problems(&self, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.check("$", &self.root, v, true, &mut out);
        out
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            Some(name) => &self.root["$defs"][name],
            None => schema,
        }
    }

    fn check(&self, at: &str, schema: &Value, v: &Value, strict: bool, out: &mut Vec<String>) {
        if schema == &Value::Bool(true) {
            return;
        }
        // `$ref` may have siblings (2020-12): check the target, then the rest here.
        if schema.get("$ref").is_some() {
            self.check(at, self.resolve(schema), v, false, out);
        }
        if let Some(t) = schema.get("type") {
            let fits = |t: &Value| match t.as_str() {
                Some("string") => v.is_string(),
                Some("integer") => v.is_i64() || v.is_u64(),
                Some("number") => v.is_number(),
                Some("boolean") => v.is_boolean(),
                Some("array") => v.is_array(),
                Some("object") => v.is_object(),
                Some("null") => v.is_null(),
                _ => false,
            };
            let ok = match t {
                Value::Array(ts) => ts.iter().any(fits),
                t => fits(t),
            };
            if !ok {
                out.push(format!("{at}: {v} is not {t}"));
                return;
            }
        }
        if let Some(c) = schema.get("const")
            && c != v
        {
            out.push(format!("{at}: {v} is not {c}"));
        }
        if let Some(e) = schema["enum"].as_array()
            && !e.contains(v)
        {
            out.push(format!("{at}: {v} is not one of {e:?}"));
        }
        if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), v.as_f64())
            && n < min
        {
            out.push(format!("{at}: {n} < {min}"));
        }
        for s in schema["allOf"].as_array().into_iter().flatten() {
            self.check(at, s, v, false, out);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(branches) = schema[key].as_array() {
                let results: Vec<Vec<String>> = branches
                    .iter()
                    .map(|b| {
                        let mut o = Vec::new();
                        self.check(at, b, v, false, &mut o);
                        o
                    })
                    .collect();
                let matching = results.iter().filter(|r| r.is_empty()).count();
                if matching == 0 || (key == "oneOf" && matching > 1) {
                    let best = results
                        .iter()
                        .min_by_key(|r| r.len())
                        .cloned()
                        .unwrap_or_default();
                    out.push(format!(
                        "{at}: {matching} {key} branches match; closest: {best:?}"
                    ));
                }
            }
        }
        if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
            for r in schema["required"].as_array().into_iter().flatten() {
                if let Some(r) = r.as_str()
                    && !obj.contains_key(r)
                {
                    out.push(format!("{at}.{r} is required"));
                }
            }
            for (k, s) in props {
                if let Some(x) = obj.get(k) {
                    self.check(&format!("{at}.{k}"), s, x, true, out);
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                self.check(&format!("{at}[{i}]"), items, x, true, out);
            }
        }
        if strict
            && let Some(obj) = v.as_object()
            && let Some(allowed) = self.allowed_keys(schema, v)
        {
            for k in obj.keys() {
                if !allowed.contains(k) {
                    out.push(format!("{at}.{k} is not in the schema"));
                }
            }
        }
    }

    /// The property names `schema` allows for `v`, through `$ref`, `allOf` and the
    /// branches of `oneOf`/`anyOf` that `v` matches; `None` when any name is allowed.
    fn allowed_keys(
        &self,
        schema: &Value,
        v: &Value,
    ) -> Option<std::collections::BTreeSet<String>> {
        let mut keys = std::collections::BTreeSet::new();
        if schema.get("$ref").is_some() {
            keys.extend(self.allowed_keys(self.resolve(schema), v)?);
        }
        match schema.get("additionalProperties") {
            Some(Value::Bool(false)) | None => {}
            Some(_) => return None,
        }
        if let Some(props) = schema["properties"].as_object() {
            keys.extend(props.keys().cloned());
        }
        for s in schema["allOf"].as_array().into_iter().flatten() {
            keys.extend(self.allowed_keys(s, v)?);
        }
        for key in ["oneOf", "anyOf"] {
            for b in schema[key].as_array().into_iter().flatten() {
                let mut o = Vec::new();
                self.check("", b, v, false, &mut o);
                if o.is_empty() {
                    keys.extend(self.allowed_keys(b, v)?);
                }
            }
        }
        Some(keys)
    }
}
