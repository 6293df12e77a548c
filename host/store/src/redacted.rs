//! A [`Store`] that redacts secret values from everything written to it.
//! Every text the host keeps about a run (its log, its reason, the audit
//! trail, what was asked for) enters the store through this one door, so
//! the database, the API's answers, the live stream and `runs show` never
//! hold a secret, whatever path the text took to get here.

use std::sync::Arc;

use async_trait::async_trait;
use rollcage_core::Redactor;
use serde_json::Value;

use crate::{
    AuditEntry, AuditFilter, DecisionRequest, DeliveryOutcome, EnvLock, Event, Lease, NewAudit,
    NewDelivery, NewRun, QueuedDelivery, Run, RunFilter, RunStatus, Store, StoreError, Unfinished,
    Wake,
};

/// `inner`, with every written text passed through a [`Redactor`].
pub struct Redacted {
    inner: Arc<dyn Store>,
    redactor: Arc<Redactor>,
}

impl Redacted {
    pub fn new(inner: Arc<dyn Store>, redactor: Arc<Redactor>) -> Redacted {
        Redacted { inner, redactor }
    }

    fn text(&self, s: &str) -> String {
        self.redactor.redact(s).into_owned()
    }

    fn json(&self, mut v: Value) -> Value {
        redact_json(&self.redactor, &mut v);
        v
    }
}

/// Every string of `v` (keys included) redacted in place.
pub fn redact_json(redactor: &Redactor, v: &mut Value) {
    if redactor.is_empty() {
        return;
    }
    match v {
        Value::String(s) => redactor.redact_string(s),
        Value::Array(items) => items.iter_mut().for_each(|i| redact_json(redactor, i)),
        Value::Object(map) => {
            let taken = std::mem::take(map);
            for (k, mut item) in taken {
                redact_json(redactor, &mut item);
                map.insert(redactor.redact(&k).into_owned(), item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[async_trait]
impl Store for Redacted {
    async fn create_run(&self, mut run: NewRun) -> Result<String, StoreError> {
        run.release = self.text(&run.release);
        run.notes = run.notes.map(|n| self.text(&n));
        for (k, v) in &mut run.params {
            *k = self.text(k);
            *v = self.text(v);
        }
        self.inner.create_run(run).await
    }
    fn host(&self) -> &str {
        self.inner.host()
    }
    fn lease_duration(&self) -> std::time::Duration {
        self.inner.lease_duration()
    }
    async fn claim(&self, run_id: Option<&str>, limit: usize) -> Result<Vec<Lease>, StoreError> {
        self.inner.claim(run_id, limit).await
    }
    async fn heartbeat(&self) -> Result<Vec<Lease>, StoreError> {
        self.inner.heartbeat().await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }
    async fn release_all(&self) -> Result<(), StoreError> {
        self.inner.release_all().await
    }
    async fn holder(&self, run_id: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.holder(run_id).await
    }
    async fn append(
        &self,
        lease: &Lease,
        kind: &str,
        stage: Option<&str>,
        data: Value,
    ) -> Result<u64, StoreError> {
        self.inner.append(lease, kind, stage, self.json(data)).await
    }
    async fn events(&self, run_id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError> {
        self.inner.events(run_id, after_seq).await
    }
    async fn set_status(
        &self,
        lease: &Lease,
        status: RunStatus,
        stage: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let reason = reason.map(|r| self.text(r));
        self.inner
            .set_status(lease, status, stage, reason.as_deref())
            .await
    }
    async fn lock_environment(
        &self,
        lease: &Lease,
        environment: &str,
        queue: bool,
    ) -> Result<EnvLock, StoreError> {
        self.inner.lock_environment(lease, environment, queue).await
    }
    async fn unlock_environment(&self, lease: &Lease, environment: &str) -> Result<(), StoreError> {
        self.inner.unlock_environment(lease, environment).await
    }
    async fn environment_locks(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.environment_locks().await
    }
    async fn run(&self, run_id: &str) -> Result<Run, StoreError> {
        self.inner.run(run_id).await
    }
    async fn run_with_log(&self, run_id: &str) -> Result<(Run, Vec<Event>), StoreError> {
        self.inner.run_with_log(run_id).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError> {
        self.inner.list_runs(filter).await
    }
    async fn unfinished_runs(&self) -> Result<Vec<Run>, StoreError> {
        self.inner.unfinished_runs().await
    }
    async fn unfinished_count(&self, pipeline: &str) -> Result<Unfinished, StoreError> {
        self.inner.unfinished_count(pipeline).await
    }
    async fn request_decision(
        &self,
        run_id: &str,
        decision: &DecisionRequest,
    ) -> Result<(), StoreError> {
        self.inner.request_decision(run_id, decision).await
    }
    async fn take_decisions(&self, lease: &Lease) -> Result<Vec<DecisionRequest>, StoreError> {
        self.inner.take_decisions(lease).await
    }
    async fn record_audit(&self, mut entry: NewAudit) -> Result<(), StoreError> {
        entry.detail = self.json(entry.detail);
        self.inner.record_audit(entry).await
    }
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(filter).await
    }
    async fn queue_deliveries(
        &self,
        mut deliveries: Vec<NewDelivery>,
    ) -> Result<Vec<u64>, StoreError> {
        // The queued event is what the notifier will send: redacted here,
        // no secret leaves through a notification either.
        for d in &mut deliveries {
            d.event = self.json(std::mem::take(&mut d.event));
        }
        self.inner.queue_deliveries(deliveries).await
    }
    async fn queued_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        self.inner.queued_deliveries().await
    }
    async fn claim_deliveries(&self) -> Result<Vec<QueuedDelivery>, StoreError> {
        self.inner.claim_deliveries().await
    }
    async fn end_delivery(&self, id: u64, outcome: &DeliveryOutcome) -> Result<bool, StoreError> {
        let mut outcome = outcome.clone();
        outcome.error = outcome.error.map(|e| self.text(&e));
        self.inner.end_delivery(id, &outcome).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn appended(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.appended()
    }
    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<Wake> {
        self.inner.wakeups()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use serde_json::json;

    #[tokio::test]
    async fn what_is_written_is_redacted_and_reads_see_only_that() {
        let (redactor, _) = Redactor::new([("HOOK".to_string(), "canary-0xC0FFEE".to_string())]);
        let store = Redacted::new(
            Arc::new(SqliteStore::in_memory().unwrap()),
            Arc::new(redactor),
        );
        let id = store
            .create_run(NewRun {
                pipeline: "api".into(),
                release: "1.0.0".into(),
                notes: Some("notes canary-0xC0FFEE".into()),
                params: vec![("k".into(), "canary-0xC0FFEE".into())],
                stages: vec!["staging".into()],
                started_by: "ci".into(),
                config_hash: "c".into(),
            })
            .await
            .unwrap();
        let lease = store.claim(Some(&id), 1).await.unwrap().remove(0);
        store
            .append(
                &lease,
                "notification",
                Some("staging"),
                json!({"error": "secret `canary-0xC0FFEE` is not granted", "canary-0xC0FFEE": [1, {"x": "canary-0xC0FFEE"}]}),
            )
            .await
            .unwrap();
        store
            .set_status(
                &lease,
                RunStatus::Failed,
                Some("staging"),
                Some("bad canary-0xC0FFEE"),
            )
            .await
            .unwrap();
        store
            .record_audit(NewAudit {
                actor: "ci".into(),
                action: "start".into(),
                run_id: Some(id.clone()),
                config_hash: "c".into(),
                detail: json!({"why": "canary-0xC0FFEE"}),
            })
            .await
            .unwrap();
        let (run, log) = store.run_with_log(&id).await.unwrap();
        let audit = store.audit(&AuditFilter::default()).await.unwrap();
        let all = format!("{run:?} {log:?} {audit:?}");
        assert!(!all.contains("canary-0xC0FFEE"), "{all}");
        assert_eq!(
            log[0].data["error"],
            "secret `[secret HOOK]` is not granted"
        );
        assert_eq!(run.reason.as_deref(), Some("bad [secret HOOK]"));
        assert_eq!(run.run.notes.as_deref(), Some("notes [secret HOOK]"));
    }
}
