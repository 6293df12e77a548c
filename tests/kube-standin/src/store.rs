//! The objects, with the API server's rules for writing them: one global
//! `resourceVersion`, optimistic concurrency, `metadata.generation` bumped
//! on spec changes only, status kept apart, validation, and server-side
//! apply with field managers. Every write is kept in the history.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::meta::{
    ApiError, Resource, dns1035_problem, label_key_problem, label_value_problem, subdomain_problem,
};

/// An object's identity: resource plural, namespace ("" when cluster
/// scoped), name.
pub type Key = (String, String, String);

/// A field path: `spec.replicas`, `metadata.labels.app`.
type Path = Vec<String>;

/// One write as the history keeps it: the object after it, or `None` when
/// it was deleted.
#[derive(Debug, Clone)]
pub struct Write {
    pub key: Key,
    pub object: Option<Value>,
}

#[derive(Default)]
pub struct Store {
    rv: u64,
    uid: u64,
    pub objects: BTreeMap<Key, Value>,
    /// Fields each manager owns, per object.
    owners: BTreeMap<Key, BTreeMap<String, BTreeSet<Path>>>,
    pub history: Vec<Write>,
}

pub fn key(r: &Resource, namespace: &str, name: &str) -> Key {
    let ns = if r.namespaced { namespace } else { "" };
    (r.plural.to_string(), ns.to_string(), name.to_string())
}

fn now() -> String {
    // A fixed-format time; the stand-in's clock is not what tests check.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86400;
    let (y, m, d) = civil(days as i64);
    let rem = secs % 86400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The current time, as the API server writes it.
pub fn timestamp() -> String {
    now()
}

/// The part of an object that counts for `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

/// Every leaf of `v` (scalars and lists; lists are atomic here), with its path.
fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeMap<Path, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone(), v.clone());
        }
    }
}

/// The fields of an applied or written object that a manager owns: all
/// but identity and bookkeeping.
fn managed_leaves(obj: &Value) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    leaves(obj, &mut Vec::new(), &mut out);
    out.retain(|p, _| {
        let first = p.first().map(String::as_str);
        let bookkeeping = first == Some("metadata")
            && matches!(
                p.get(1).map(String::as_str),
                Some(
                    "name"
                        | "namespace"
                        | "resourceVersion"
                        | "uid"
                        | "generation"
                        | "creationTimestamp"
                        | "managedFields"
                )
            );
        !matches!(first, Some("apiVersion" | "kind")) && !bookkeeping
    });
    out
}

fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn set_path(v: &mut Value, path: &[String], value: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        if !cur.get(k).is_some_and(Value::is_object) {
            cur[k.as_str()] = json!({});
        }
        cur = cur.get_mut(k).unwrap();
    }
    cur[path[path.len() - 1].as_str()] = value;
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if let Some(Value::Object(m)) = parents.iter().try_fold(&mut *v, |v, k| v.get_mut(k)) {
        m.remove(last);
    }
}

/// `fieldsV1` of a set of paths: `{"f:spec": {"f:replicas": {}}}`.
fn fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = json!({});
    for p in paths {
        let mut cur = &mut root;
        for k in p {
            let f = format!("f:{k}");
            if cur.get(&f).is_none() {
                cur[f.as_str()] = json!({});
            }
            cur = cur.get_mut(&f).unwrap();
        }
    }
    root
}

/// Validation the API server does for every write of these resources.
pub fn validate(r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    let mut causes = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let name_problem = if r.plural == "services" || r.plural == "namespaces" {
        dns1035_problem(name).or_else(|| {
            (r.plural == "namespaces")
                .then(|| subdomain_problem(name))
                .flatten()
        })
    } else {
        subdomain_problem(name)
    };
    if let Some(p) = name_problem {
        causes.push(("metadata.name".into(), p));
    }
    let mut check_labels = |labels: &Value, field: &str| {
        if let Some(m) = labels.as_object() {
            for (k, v) in m {
                if let Some(p) = label_key_problem(k) {
                    causes.push((field.to_string(), p));
                }
                match v.as_str() {
                    Some(v) => {
                        if let Some(p) = label_value_problem(v) {
                            causes.push((field.to_string(), p));
                        }
                    }
                    None => causes.push((
                        field.to_string(),
                        format!("Invalid value: {v}: must be a string"),
                    )),
                }
            }
        }
    };
    check_labels(&obj["metadata"]["labels"], "metadata.labels");
    if r.plural == "deployments" || r.plural == "jobs" {
        check_labels(
            &obj["spec"]["template"]["metadata"]["labels"],
            "spec.template.metadata.labels",
        );
    }
    if r.plural == "deployments" {
        let selector = &obj["spec"]["selector"];
        if selector.is_null() {
            causes.push(("spec.selector".into(), "Required value".into()));
        } else if let Some(m) = selector["matchLabels"].as_object() {
            let labels = &obj["spec"]["template"]["metadata"]["labels"];
            let matches = m.iter().all(|(k, v)| &labels[k] == v);
            if !matches {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    format!("Invalid value: {labels}: `selector` does not match template `labels`"),
                ));
            }
        }
        if let Some(old) = old
            && old["spec"]["selector"] != *selector
        {
            causes.push((
                "spec.selector".into(),
                format!("Invalid value: {selector}: field is immutable"),
            ));
        }
    }
    if r.plural == "services"
        && let Some(old) = old
        && !old["spec"]["clusterIP"].is_null()
        && !obj["spec"]["clusterIP"].is_null()
        && old["spec"]["clusterIP"] != obj["spec"]["clusterIP"]
    {
        causes.push((
            "spec.clusterIP".into(),
            "Invalid value: field is immutable".into(),
        ));
    }
    if r.plural == "jobs"
        && let Some(old) = old
        && old["spec"]["template"] != obj["spec"]["template"]
    {
        causes.push((
            "spec.template".into(),
            "Invalid value: field is immutable".into(),
        ));
    }
    causes
}

/// How a write changes the fields managers own.
pub enum Manage<'a> {
    /// An update (PUT, merge or JSON patch) by `manager`: it takes the
    /// fields it changed.
    Update(&'a str),
    /// A status write: no manager bookkeeping.
    Status,
    /// The controllers' own writes.
    Controller,
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn record(&mut self, key: &Key) {
        let object = self.objects.get(key).cloned();
        self.history.push(Write {
            key: key.clone(),
            object,
        });
    }

    fn render_managed_fields(&mut self, key: &Key, r: &Resource) {
        let Some(owners) = self.owners.get(key) else {
            return;
        };
        let fields: Vec<Value> = owners
            .iter()
            .filter(|(_, paths)| !paths.is_empty())
            .map(|(manager, paths)| {
                let (name, op) = manager.split_once('\u{0}').unwrap_or((manager, "Update"));
                json!({
                    "manager": name, "operation": op, "apiVersion": r.api_version(),
                    "time": now(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(paths),
                })
            })
            .collect();
        if let Some(obj) = self.objects.get_mut(key) {
            obj["metadata"]["managedFields"] = Value::Array(fields);
        }
    }

    /// Create `obj` (POST): AlreadyExists when the name is taken.
    pub fn create(
        &mut self,
        r: &Resource,
        namespace: &str,
        mut obj: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let causes = validate(r, &obj, None);
        if !causes.is_empty() {
            return Err(ApiError::invalid(r, &name, &causes));
        }
        let key = key(r, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(r, &name));
        }
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        if r.namespaced {
            obj["metadata"]["namespace"] = json!(namespace);
        }
        if r.status {
            // The main resource never sets status.
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        self.uid += 1;
        obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uid));
        obj["metadata"]["creationTimestamp"] = json!(now());
        obj["metadata"]["generation"] = json!(1);
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        if r.plural == "services" && obj["spec"]["clusterIP"].is_null() {
            obj["spec"]["clusterIP"] =
                json!(format!("10.96.{}.{}", self.uid / 250, self.uid % 250 + 1));
        }
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        let fields: BTreeSet<Path> = managed_leaves(&obj).into_keys().collect();
        self.owners
            .entry(key.clone())
            .or_default()
            .insert(format!("{manager}\u{0}Update"), fields);
        self.objects.insert(key.clone(), obj);
        self.render_managed_fields(&key, r);
        self.record(&key);
        Ok(self.objects[&key].clone())
    }

    /// Replace the object at `key` with `obj` (PUT, or the result of a
    /// patch): a stale `resourceVersion` is a Conflict.
    pub fn update(
        &mut self,
        r: &Resource,
        key: &Key,
        mut obj: Value,
        how: Manage<'_>,
    ) -> Result<Value, ApiError> {
        let name = key.2.clone();
        let Some(old) = self.objects.get(key).cloned() else {
            return Err(ApiError::not_found(r, &name));
        };
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
            && !rv.is_empty()
            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
        {
            return Err(ApiError::conflict(r, &name));
        }
        if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    obj["metadata"]["name"].as_str().unwrap_or("")
                ),
            ));
        }
        obj["metadata"]["name"] = json!(name);
        // Identity and bookkeeping are the server's.
        for field in ["uid", "creationTimestamp", "generation", "namespace"] {
            if !old["metadata"][field].is_null() {
                obj["metadata"][field] = old["metadata"][field].clone();
            }
        }
        obj["apiVersion"] = json!(r.api_version());
        obj["kind"] = json!(r.kind);
        match how {
            Manage::Status => {
                // Only status changes through `/status`.
                let status = obj.get("status").cloned();
                obj = old.clone();
                match status {
                    Some(s) => obj["status"] = s,
                    None => {
                        obj.as_object_mut().unwrap().remove("status");
                    }
                }
            }
            Manage::Update(_) | Manage::Controller => {
                if r.status {
                    match old.get("status") {
                        Some(s) => obj["status"] = s.clone(),
                        None => {
                            obj.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
            }
        }
        if matches!(how, Manage::Update(_)) {
            let causes = validate(r, &obj, Some(&old));
            if !causes.is_empty() {
                return Err(ApiError::invalid(r, &name, &causes));
            }
        }
        if spec_part(&obj) != spec_part(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = json!(generation);
        }
        if let Manage::Update(manager) = how {
            let before = managed_leaves(&old);
            let after = managed_leaves(&obj);
            let changed: BTreeSet<Path> = after
                .iter()
                .filter(|(p, v)| before.get(*p) != Some(*v))
                .map(|(p, _)| p.clone())
                .collect();
            let owners = self.owners.entry(key.clone()).or_default();
            for (m, paths) in owners.iter_mut() {
                if !m.starts_with(&format!("{manager}\u{0}")) {
                    paths.retain(|p| !changed.contains(p));
                }
            }
            owners
                .entry(format!("{manager}\u{0}Update"))
                .or_default()
                .extend(changed);
        }
        if obj == old {
            return Ok(old);
        }
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        self.objects.insert(key.clone(), obj);
        self.render_managed_fields(key, r);
        self.record(key);
        Ok(self.objects[key].clone())
    }

    /// Server-side apply of `applied` by `manager`: creates the object when
    /// missing; a field another manager owns with another value is a
    /// conflict unless `force`; fields this manager applied before and no
    /// longer applies are removed.
    pub fn apply(
        &mut self,
        r: &Resource,
        namespace: &str,
        name: &str,
        applied: Value,
        manager: &str,
        force: bool,
    ) -> Result<Value, ApiError> {
        if applied["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    applied["metadata"]["name"].as_str().unwrap_or("")
                ),
            ));
        }
        let key = key(r, namespace, name);
        let me = format!("{manager}\u{0}Apply");
        let new_fields = managed_leaves(&applied);
        let Some(old) = self.objects.get(&key).cloned() else {
            let obj = self.create(r, namespace, applied, manager)?;
            let owners = self.owners.entry(key.clone()).or_default();
            let fields = owners
                .remove(&format!("{manager}\u{0}Update"))
                .unwrap_or_default();
            owners.insert(me, fields);
            self.render_managed_fields(&key, r);
            if let Some(last) = self.history.last_mut() {
                last.object = self.objects.get(&key).cloned();
            }
            return Ok(self.objects.get(&key).cloned().unwrap_or(obj));
        };
        let owners = self.owners.entry(key.clone()).or_default().clone();
        let mut conflicts = Vec::new();
        for (path, value) in &new_fields {
            if get_path(&old, path) == Some(value) {
                continue;
            }
            for (m, paths) in &owners {
                if *m != me && paths.contains(path) {
                    let who = m.split('\u{0}').next().unwrap_or(m);
                    conflicts.push(format!("conflict with \"{who}\": .{}", path.join(".")));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts.join("; ")
                ),
            );
            e.details = json!({"name": name, "group": r.group, "kind": r.plural});
            return Err(e);
        }
        let mut obj = old.clone();
        let mine_before = owners.get(&me).cloned().unwrap_or_default();
        for path in &mine_before {
            let others = owners
                .iter()
                .any(|(m, paths)| *m != me && paths.contains(path));
            if !new_fields.contains_key(path) && !others {
                remove_path(&mut obj, path);
            }
        }
        for (path, value) in &new_fields {
            set_path(&mut obj, path, value.clone());
        }
        if r.status {
            // Apply to the main resource does not touch status.
            match old.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    obj.as_object_mut().unwrap().remove("status");
                }
            }
        }
        let causes = validate(r, &obj, Some(&old));
        if !causes.is_empty() {
            return Err(ApiError::invalid(r, name, &causes));
        }
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        let owners = self.owners.entry(key.clone()).or_default();
        for (m, paths) in owners.iter_mut() {
            if *m != me {
                paths.retain(|p| {
                    !new_fields.contains_key(p) || get_path(&old, p) == new_fields.get(p)
                });
            }
        }
        owners.insert(me, new_fields.keys().cloned().collect());
        if spec_part(&obj) != spec_part(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = json!(generation);
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        let mut old_cmp = old.clone();
        if let Some(m) = old_cmp["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        if obj != old_cmp {
            obj["metadata"]["resourceVersion"] = json!(self.next_rv());
            self.objects.insert(key.clone(), obj);
            self.render_managed_fields(&key, r);
            self.record(&key);
        } else {
            self.render_managed_fields(&key, r);
        }
        Ok(self.objects[&key].clone())
    }

    /// Delete the object at `key`, and (background propagation) every
    /// object it owns.
    pub fn delete(&mut self, r: &Resource, key: &Key) -> Result<Value, ApiError> {
        let Some(obj) = self.objects.remove(key) else {
            return Err(ApiError::not_found(r, &key.2));
        };
        self.owners.remove(key);
        self.next_rv();
        self.record(key);
        let uid = obj["metadata"]["uid"].clone();
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in owned {
            self.objects.remove(&k);
            self.owners.remove(&k);
            self.next_rv();
            self.record(&k);
        }
        Ok(obj)
    }

    /// A controller's write of an object's status (no validation, no
    /// owners); unchanged status is no write.
    pub fn set_status(&mut self, key: &Key, status: Value) {
        let Some(obj) = self.objects.get(key) else {
            return;
        };
        if obj.get("status") == Some(&status) {
            return;
        }
        let rv = self.next_rv();
        let obj = self.objects.get_mut(key).unwrap();
        obj["status"] = status;
        obj["metadata"]["resourceVersion"] = json!(rv);
        self.record(key);
    }

    /// A controller's write of a whole object it owns (a pod).
    pub fn put_controlled(&mut self, key: &Key, mut obj: Value) {
        if self.objects.get(key) == Some(&obj) {
            return;
        }
        if !self.objects.contains_key(key) {
            self.uid += 1;
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uid));
            obj["metadata"]["creationTimestamp"] = json!(now());
        }
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(key.clone(), obj);
        self.record(key);
    }

    /// Objects of `plural` in `namespace` ("" for all).
    pub fn list(&self, plural: &str, namespace: &str) -> Vec<(&Key, &Value)> {
        self.objects
            .iter()
            .filter(|(k, _)| k.0 == plural && (namespace.is_empty() || k.1 == namespace))
            .collect()
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// RFC 6902 JSON patch (`add`, `remove`, `replace`, `test`).
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is a list of operations")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("an operation without a path")?;
        let pointer: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        match op["op"].as_str() {
            Some("test") => {
                if target.pointer(path) != Some(&op["value"]) {
                    return Err(format!("the test at {path} failed"));
                }
            }
            Some("remove") => {
                let (last, parent) = pointer.split_last().ok_or("cannot remove the root")?;
                let parent_ptr: String = parent.iter().map(|s| format!("/{s}")).collect();
                match target.pointer_mut(&parent_ptr) {
                    Some(Value::Object(m)) => {
                        m.remove(last).ok_or(format!("{path} does not exist"))?;
                    }
                    Some(Value::Array(a)) => {
                        let i: usize = last.parse().map_err(|_| format!("bad index in {path}"))?;
                        if i >= a.len() {
                            return Err(format!("{path} does not exist"));
                        }
                        a.remove(i);
                    }
                    _ => return Err(format!("{path} does not exist")),
                }
            }
            Some(kind @ ("add" | "replace")) => {
                let value = op["value"].clone();
                let Some((last, parent)) = pointer.split_last() else {
                    *target = value;
                    continue;
                };
                let parent_ptr: String = parent.iter().map(|s| format!("/{s}")).collect();
                match target.pointer_mut(&parent_ptr) {
                    Some(Value::Object(m)) => {
                        if kind == "replace" && !m.contains_key(last) {
                            return Err(format!("{path} does not exist"));
                        }
                        m.insert(last.clone(), value);
                    }
                    Some(Value::Array(a)) => {
                        if last == "-" && kind == "add" {
                            a.push(value);
                        } else {
                            let i: usize =
                                last.parse().map_err(|_| format!("bad index in {path}"))?;
                            match kind {
                                "add" if i <= a.len() => a.insert(i, value),
                                "replace" if i < a.len() => a[i] = value,
                                _ => return Err(format!("{path} is out of range")),
                            }
                        }
                    }
                    _ => return Err(format!("the parent of {path} does not exist")),
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    Ok(())
}
