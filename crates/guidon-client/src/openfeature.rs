//! An OpenFeature provider over the client (the `open-feature` crate).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use guidon_client::Client;
//! use guidon_client::openfeature::GuidonProvider;
//! use open_feature::{EvaluationContext, OpenFeature};
//!
//! let client = Client::builder("http://127.0.0.1:8080", "gdn_sdk_token").build().await?;
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(GuidonProvider::new(client)).await;
//! let of = api.create_client();
//! let ctx = EvaluationContext::default().with_targeting_key("user_42");
//! let on = of.get_bool_value("new_checkout", Some(&ctx), None).await.unwrap_or(false);
//! # Ok(()) }
//! ```
//!
//! Mapping:
//! - the context's `targetingKey` becomes the `targetingKey` attribute,
//!   which the engine buckets by when `user_id` is absent (flag-format.md
//!   §4); custom fields become attributes (date-times as RFC 3339 strings;
//!   structures given as `serde_json::Value` or OpenFeature `Value`);
//! - reasons map one to one (`STALE` has no OpenFeature variant in this
//!   crate: it is `Other("STALE")`); an unknown flag is `FLAG_NOT_FOUND`,
//!   a value of another type `TYPE_MISMATCH`, a client with no flags yet
//!   `PROVIDER_NOT_READY`, a client the server refused before any flags
//!   arrived `PROVIDER_FATAL` (as `General`: the crate has no such code;
//!   its status is then `Error`, the crate having no `Fatal` either);
//! - a boolean asked of a flag that serves no value (off with no off
//!   variant) is `enabled`; other types get an error (`GENERAL`, saying
//!   so), so the caller's default is used, as OFREP's "code default" (the
//!   crate does not give the provider the caller's default, which it could
//!   return with reason `DISABLED`);
//! - metadata: `flag_version`, `revision`, `rule`, `bucket`, `target`,
//!   `override`, `prerequisite_failed`, `missing_bucketing_value`.

use std::collections::HashMap;

use guidon_engine::{Context, Evaluation, Reason, Timestamp};
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode,
    EvaluationReason, EvaluationResult, FlagMetadata, StructValue, Value as OfValue,
};
use serde_json::Value;

use crate::{Client, Status};

/// OpenFeature's error code for a provider in an irrecoverable state; the
/// `open-feature` crate (0.3) has no variant for it, so it is `General`.
pub const PROVIDER_FATAL: &str = "PROVIDER_FATAL";

/// OpenFeature's error code for any other error.
pub const GENERAL: &str = "GENERAL";

/// The provider: evaluates locally through a [`Client`].
#[derive(Debug)]
pub struct GuidonProvider {
    client: Client,
    metadata: ProviderMetadata,
}

impl GuidonProvider {
    pub fn new(client: Client) -> GuidonProvider {
        GuidonProvider {
            client,
            metadata: ProviderMetadata::new("guidon"),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether there is a copy to evaluate: from the server, a snapshot or
    /// a bootstrap.
    fn has_flags(&self) -> bool {
        let doc = self.client.document();
        doc.revision.is_some() || !doc.file.flags.is_empty()
    }

    fn resolve<T>(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
        convert: impl FnOnce(&Evaluation<'_>) -> Result<T, EvaluationError>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        match self.client.status() {
            Status::Starting => {
                return Err(error(
                    EvaluationErrorCode::ProviderNotReady,
                    "no flags yet: the server has not answered and there is no bootstrap",
                ));
            }
            // Refused (token, environment) before any flags arrived: every
            // flag would otherwise look missing (FLAG_NOT_FOUND).
            Status::Error if !self.has_flags() => {
                let why = self.client.last_error().unwrap_or_default();
                return Err(error(
                    EvaluationErrorCode::General(PROVIDER_FATAL.into()),
                    format!("no flags: the server refuses this client: {why}"),
                ));
            }
            _ => {}
        }
        let ctx = to_context(context);
        let revision = self.client.revision();
        self.client
            .with_evaluation_at(flag_key, &ctx, Timestamp::now(), |ev| {
                if ev.error_code.is_some() {
                    return Err(error(
                        EvaluationErrorCode::FlagNotFound,
                        format!("no flag {flag_key:?}"),
                    ));
                }
                let value = convert(ev)?;
                Ok(ResolutionDetails {
                    value,
                    variant: ev.variant.map(str::to_owned),
                    reason: Some(reason(ev.reason)),
                    flag_metadata: Some(metadata(ev, revision)),
                })
            })
    }
}

fn error(code: EvaluationErrorCode, message: impl Into<String>) -> EvaluationError {
    EvaluationError {
        code,
        message: Some(message.into()),
    }
}

fn mismatch(ev: &Evaluation<'_>, wanted: &str) -> EvaluationError {
    match ev.value {
        Some(v) => error(
            EvaluationErrorCode::TypeMismatch,
            format!("flag {:?} serves {v}, not {wanted}", ev.flag),
        ),
        None => error(
            // OpenFeature's codes are a closed set: this is GENERAL.
            EvaluationErrorCode::General(GENERAL.into()),
            format!(
                "flag {:?} is off and has no off variant: use the default",
                ev.flag
            ),
        ),
    }
}

/// The engine's reason as OpenFeature's.
pub fn reason(r: Reason) -> EvaluationReason {
    match r {
        Reason::Static => EvaluationReason::Static,
        Reason::Default => EvaluationReason::Default,
        Reason::TargetingMatch => EvaluationReason::TargetingMatch,
        Reason::Split => EvaluationReason::Split,
        Reason::Disabled => EvaluationReason::Disabled,
        Reason::Error => EvaluationReason::Error,
        Reason::Cached => EvaluationReason::Cached,
        Reason::Stale => EvaluationReason::Other("STALE".into()),
    }
}

fn metadata(ev: &Evaluation<'_>, revision: Option<u64>) -> FlagMetadata {
    let mut m = FlagMetadata::default();
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    if let Some(v) = ev.flag_version {
        m.add_value("flag_version", int(v));
    }
    if let Some(r) = revision {
        m.add_value("revision", int(r));
    }
    let meta = &ev.metadata;
    if let Some(rule) = meta.rule {
        m.add_value("rule", rule.to_owned());
    }
    if let Some(bucket) = meta.bucket {
        m.add_value("bucket", bucket);
    }
    if let Some(p) = meta.prerequisite_failed {
        m.add_value("prerequisite_failed", p.to_owned());
    }
    if meta.target {
        m.add_value("target", true);
    }
    if meta.override_served {
        m.add_value("override", true);
    }
    if meta.missing_bucketing_value {
        m.add_value("missing_bucketing_value", true);
    }
    m
}

/// An OpenFeature context as a Guidon context.
pub fn to_context(context: &EvaluationContext) -> Context {
    let mut ctx = Context::new();
    if let Some(key) = &context.targeting_key {
        ctx.insert(guidon_engine::model::TARGETING_KEY, key.clone());
    }
    for (name, field) in &context.custom_fields {
        let value = match field {
            EvaluationContextFieldValue::Bool(b) => Value::Bool(*b),
            EvaluationContextFieldValue::Int(i) => Value::from(*i),
            EvaluationContextFieldValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            EvaluationContextFieldValue::String(s) => Value::String(s.clone()),
            EvaluationContextFieldValue::DateTime(t) => {
                match Timestamp::from_nanosecond(t.unix_timestamp_nanos()) {
                    Ok(ts) => Value::String(ts.to_string()),
                    Err(_) => continue,
                }
            }
            EvaluationContextFieldValue::Struct(any) => {
                if let Some(v) = any.downcast_ref::<Value>() {
                    v.clone()
                } else if let Some(v) = any.downcast_ref::<OfValue>() {
                    from_of_value(v)
                } else if let Some(v) = any.downcast_ref::<StructValue>() {
                    from_of_value(&OfValue::Struct(v.clone()))
                } else {
                    continue;
                }
            }
        };
        ctx.insert(name.clone(), value);
    }
    ctx
}

/// JSON as an OpenFeature value; `null` has no OpenFeature form.
pub fn to_of_value(v: &Value) -> Option<OfValue> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => OfValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => OfValue::Int(i),
            None => OfValue::Float(n.as_f64()?),
        },
        Value::String(s) => OfValue::String(s.clone()),
        Value::Array(items) => OfValue::Array(items.iter().filter_map(to_of_value).collect()),
        Value::Object(map) => OfValue::Struct(StructValue {
            fields: map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), to_of_value(v)?)))
                .collect::<HashMap<_, _>>(),
        }),
    })
}

fn from_of_value(v: &OfValue) -> Value {
    match v {
        OfValue::Bool(b) => Value::Bool(*b),
        OfValue::Int(i) => Value::from(*i),
        OfValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        OfValue::String(s) => Value::String(s.clone()),
        OfValue::Array(items) => Value::Array(items.iter().map(from_of_value).collect()),
        OfValue::Struct(s) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_of_value(v)))
                .collect(),
        ),
    }
}

#[open_feature::async_trait]
impl FeatureProvider for GuidonProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn status(&self) -> ProviderStatus {
        match self.client.status() {
            Status::Starting => ProviderStatus::NotReady,
            Status::Ready => ProviderStatus::Ready,
            Status::Stale => ProviderStatus::STALE,
            Status::Error => ProviderStatus::Error,
        }
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(flag_key, context, |ev| match ev.value {
            Some(Value::Bool(b)) => Ok(*b),
            None => Ok(ev.enabled),
            Some(_) => Err(mismatch(ev, "a boolean")),
        })
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(flag_key, context, |ev| {
            ev.value
                .and_then(Value::as_i64)
                .ok_or_else(|| mismatch(ev, "an integer"))
        })
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(flag_key, context, |ev| {
            ev.value
                .and_then(Value::as_f64)
                .ok_or_else(|| mismatch(ev, "a number"))
        })
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(flag_key, context, |ev| {
            ev.value
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| mismatch(ev, "a string"))
        })
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(flag_key, context, |ev| {
            match ev.value.and_then(to_of_value) {
                Some(OfValue::Struct(s)) => Ok(s),
                _ => Err(mismatch(ev, "an object")),
            }
        })
    }
}
