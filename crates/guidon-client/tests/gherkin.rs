//! OpenFeature's own Gherkin conformance suites, run against
//! [`GuidonProvider`] through the `open-feature` crate, backed by a real
//! `guidon serve` (guidon-server's `TestServer`) that holds
//! `testdata/openfeature/flags.json`: the suites' `test-flags.json`
//! translated into Guidon flags (`testdata/openfeature/README.md` maps each
//! one).
//!
//! The suites are vendored unchanged in `testdata/openfeature/`:
//! `evaluation_v2.feature` and `metadata.feature`. (The deprecated
//! `evaluation.feature` is not run: its context-aware scenario needs a
//! `context-aware` flag that `test-flags.json` does not have, and
//! `evaluation_v2.feature` covers the rest of it.)
//!
//! The runner is part of this file (about 300 lines, no dependency of its
//! own): a reader of the Gherkin these files use (it refuses any other line),
//! backgrounds prepended, outlines expanded, each step matched by exactly
//! one definition, one fresh world per scenario, one scenario at a time.
//! Not the `cucumber` crate: it turns on clap's default features
//! (suggestions, colour, wrapped help) in every test build, so the `guidon`
//! CLI under test would differ from the one shipped; and its parser, the
//! `gherkin` crate, refuses `\"` in a table cell, which these files use
//! and Cucumber's reference parser accepts (it also brings Unicode line
//! breaking, whose `alloc` features on the ICU crates under `url` would
//! rebuild reqwest, sqlx and the server for every test build apart from
//! `cargo build -p guidon`). Every scenario runs, and the test fails
//! unless:
//!
//! 1. every scenario not listed in [`KNOWN`] passes: no failed step, no
//!    step without a definition;
//! 2. every scenario listed in [`KNOWN`] fails. One that starts to pass
//!    fails the test, so the list stays true; each entry must match exactly
//!    one scenario.
//!
//! # What the glue maps
//!
//! - The `open-feature` crate (0.3) returns `Err(EvaluationError)` where
//!   the spec's client returns the caller's default: its API takes no
//!   default. The steps read an `Err` as the spec does: the fallback value,
//!   reason `ERROR`, the error's code.
//! - The crate's client does not expose the provider's status (spec 1.7.1);
//!   the steps ask the provider ([`FeatureProvider::status`]).
//! - The crate has no null context value; a null is given as a
//!   `serde_json::Value::Null` structure, which the provider reads as JSON
//!   (absent, flag-format.md §4).
//! - Providers: *stable* is a client of the test server with an sdk token;
//!   *not ready* a client of a port where nothing listens, without
//!   bootstrap (`Starting`); *stale* the same with the translated file as
//!   bootstrap (`Stale`); *error* and *fatal* a client the server refuses
//!   (an unknown token: `Error`). Guidon has one refusal state, and the
//!   crate's `ProviderStatus` no `Fatal`.
//!
//! # Scenarios that cannot pass ([`KNOWN`])
//!
//! - **`DEFAULT` when targeting does not match** (15: "Resolves zero value
//!   with targeting using default", "Empty evaluation context", "Null
//!   context values"). A Guidon flag with variants that no target or rule
//!   decides is served by its weight split, reason `SPLIT` (flag-format.md
//!   §5 step 8), even when one variant has all the weight. The value and
//!   variant are right; only the reason differs. Guidon's `DEFAULT` comes
//!   only from a flag without variants or a failed prerequisite.
//! - **`DISABLED` for non-boolean flags** (4). A disabled flag without an
//!   off variant serves no value, so the caller's default applies. The
//!   crate's provider interface is never given the caller's default, so the
//!   provider cannot return it with reason `DISABLED`: it returns an error
//!   (`GENERAL`) and the caller's default is used, reason `ERROR`. The
//!   boolean case passes: a boolean asked of a flag that serves no value is
//!   the flag's `enabled`, `false`, with reason `DISABLED`, and the suite's
//!   default is `false` too (with a default of `true` it would still be
//!   `false`).
//! - **`CACHED`** (2). Guidon evaluates every call against its local copy
//!   of the rules; nothing is cached per evaluation, and `CACHED` is
//!   reserved (flag-format.md §7). Reporting it would be untrue.
//! - **Status `FATAL`** (1). The crate (0.3) has no `ProviderStatus::Fatal`.
//!   A refused client is `Error`; its evaluations report `PROVIDER_FATAL`,
//!   so "Provider in fatal state error" passes.
//! - **Flag metadata** (6). Guidon flags carry no metadata of their own
//!   (the flag format has no such field), so `metadata-flag`'s four values
//!   cannot be given ("Flag metadata in evaluation details", "Returns
//!   metadata"); and the provider always reports Guidon's evaluation
//!   metadata (`flag_version`, `revision`, and `override` for these flags),
//!   so no flag's metadata is empty ("Returns no metadata", 4).
//!
//! Run: `cargo test --workspace --test gherkin`.

#![allow(clippy::unwrap_used)]

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt as _;
use guidon_client::openfeature::{GuidonProvider, to_of_value};
use guidon_client::{Client, Status};
use guidon_server::testing::{ENV, TestServer, free_port, sqlite};
use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationDetails, EvaluationError,
    EvaluationOptions, EvaluationResult, FlagMetadata, FlagMetadataValue, Hook, HookContext,
    HookHints, OpenFeature, StructValue, Value,
};
use regex::Regex;
use serde_json::Value as Json;

/// Scenarios expected to fail, with why (see the module docs).
struct Known {
    feature: &'static str,
    scenario: &'static str,
    /// For an outline, its examples that fail: each a text that one step
    /// of exactly one example contains. Empty: the scenario itself.
    examples: &'static [&'static str],
    why: &'static str,
}

const V2: &str = "Flag Evaluations - Complete OpenFeature Specification Coverage";
const META: &str = "Metadata";

const TARGETED: &[&str] = &[
    "\"boolean-targeted-zero-flag\"",
    "\"string-targeted-zero-flag\"",
    "\"integer-targeted-zero-flag\"",
    "\"float-targeted-zero-flag\"",
    "\"object-targeted-zero-flag\"",
];
const NO_DEFAULT: &str = "an untargeted Guidon flag with variants is SPLIT, not DEFAULT";

const KNOWN: &[Known] = &[
    Known {
        feature: V2,
        scenario: "Resolves zero value with targeting using default",
        examples: TARGETED,
        why: NO_DEFAULT,
    },
    Known {
        feature: V2,
        scenario: "Empty evaluation context",
        examples: TARGETED,
        why: NO_DEFAULT,
    },
    Known {
        feature: V2,
        scenario: "Null context values",
        examples: TARGETED,
        why: NO_DEFAULT,
    },
    Known {
        feature: V2,
        scenario: "DISABLED reason",
        examples: &[
            "\"string-disabled-flag\"",
            "\"integer-disabled-flag\"",
            "\"float-disabled-flag\"",
            "\"object-disabled-flag\"",
        ],
        why: "the crate gives the provider no default to return with DISABLED",
    },
    Known {
        feature: V2,
        scenario: "CACHED reason",
        examples: &["\"boolean-flag\"", "\"string-flag\""],
        why: "Guidon evaluates every call; CACHED is reserved",
    },
    Known {
        feature: V2,
        scenario: "Provider status accessibility",
        examples: &["a fatal provider"],
        why: "open-feature 0.3 has no ProviderStatus::Fatal",
    },
    Known {
        feature: V2,
        scenario: "Flag metadata in evaluation details",
        examples: &[],
        why: "Guidon flags have no metadata field",
    },
    Known {
        feature: META,
        scenario: "Returns metadata",
        examples: &[],
        why: "Guidon flags have no metadata field",
    },
    Known {
        feature: META,
        scenario: "Returns no metadata",
        examples: &[
            "\"boolean-flag\"",
            "\"integer-flag\"",
            "\"float-flag\"",
            "\"string-flag\"",
        ],
        why: "the provider always reports flag_version, revision, override",
    },
];

/// Every scenario [`KNOWN`] names: (entry, example) pairs.
fn known_cases() -> Vec<(usize, Option<&'static str>)> {
    KNOWN
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            let examples: Vec<Option<&'static str>> = if k.examples.is_empty() {
                vec![None]
            } else {
                k.examples.iter().copied().map(Some).collect()
            };
            examples.into_iter().map(move |e| (i, e))
        })
        .collect()
}

/// The index in [`known_cases`] of this scenario, if it is known to fail.
fn known_index(case: &Case) -> Option<usize> {
    known_cases().iter().position(|&(i, example)| {
        KNOWN[i].feature == case.feature
            && KNOWN[i].scenario == case.scenario
            && example.is_none_or(|text| case.steps.iter().any(|s| s.text.contains(text)))
    })
}

/// One scenario to run: an outline's example, the background first.
#[derive(Debug)]
struct Case {
    feature: String,
    scenario: String,
    /// The example's values, for outlines.
    example: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
struct Step {
    text: String,
    table: Option<Vec<Vec<String>>>,
}

/// A feature file as read: steps still holding `<placeholders>`.
#[derive(Default)]
struct Parsed {
    feature: String,
    background: Vec<Step>,
    scenarios: Vec<Outline>,
}

struct Outline {
    name: String,
    steps: Vec<Step>,
    /// Each `Examples:` table, its header first.
    examples: Vec<Vec<Vec<String>>>,
}

/// Reads the Gherkin these suites use (Feature, Background, Scenario,
/// Scenario Outline, Examples, steps, tables, tags and comments) and
/// refuses any line it does not understand, so nothing is dropped
/// silently. Table cells unescape `\|`, `\\` and `\n` and keep any other
/// backslash, as Cucumber's reference parser does.
fn parse(text: &str, origin: &str) -> Parsed {
    #[derive(PartialEq)]
    enum In {
        Header,
        Background,
        Scenario,
        Examples,
    }
    let mut parsed = Parsed::default();
    let mut section = In::Header;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let fail = |why: &str| -> ! { panic!("{origin}:{}: {why}: {line:?}", n + 1) };
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let keyword = |k: &str| line.strip_prefix(k).map(str::trim);
        if let Some(name) = keyword("Feature:") {
            parsed.feature = name.to_owned();
        } else if keyword("Background:").is_some() {
            section = In::Background;
        } else if let Some(name) = keyword("Scenario Outline:")
            .or_else(|| keyword("Scenario Template:"))
            .or_else(|| keyword("Scenario:"))
            .or_else(|| keyword("Example:"))
        {
            section = In::Scenario;
            parsed.scenarios.push(Outline {
                name: name.to_owned(),
                steps: Vec::new(),
                examples: Vec::new(),
            });
        } else if keyword("Examples:")
            .or_else(|| keyword("Scenarios:"))
            .is_some()
        {
            let Some(outline) = parsed.scenarios.last_mut() else {
                fail("Examples outside a scenario")
            };
            outline.examples.push(Vec::new());
            section = In::Examples;
        } else if line.starts_with('|') {
            let row = cells(line).unwrap_or_else(|| fail("a table row must end with |"));
            let outline = parsed.scenarios.last_mut();
            let table = match (&section, outline) {
                (In::Examples, Some(o)) => o.examples.last_mut(),
                (In::Scenario, Some(o)) => o.steps.last_mut().map(Step::table),
                (In::Background, _) => parsed.background.last_mut().map(Step::table),
                _ => None,
            };
            table
                .unwrap_or_else(|| fail("a table row outside a step or examples"))
                .push(row);
        } else if let Some(step) = ["Given ", "When ", "Then ", "And ", "But ", "* "]
            .iter()
            .find_map(|k| line.strip_prefix(k))
        {
            let step = Step {
                text: step.trim().to_owned(),
                table: None,
            };
            match (&section, parsed.scenarios.last_mut()) {
                (In::Background, _) => parsed.background.push(step),
                (In::Scenario, Some(outline)) => outline.steps.push(step),
                _ => fail("a step outside a scenario"),
            }
        } else {
            fail("not understood (Rule, doc strings and descriptions are not supported)")
        }
    }
    assert!(!parsed.feature.is_empty(), "{origin}: no Feature");
    parsed
}

/// The cells of a table row, or `None` if it does not end with `|`.
fn cells(line: &str) -> Option<Vec<String>> {
    let inner = line.strip_prefix('|')?;
    let (mut cells, mut cell, mut chars) = (Vec::new(), String::new(), inner.chars());
    let mut closed = false;
    while let Some(ch) = chars.next() {
        closed = false;
        match ch {
            '\\' => match chars.next() {
                Some('|') => cell.push('|'),
                Some('\\') => cell.push('\\'),
                Some('n') => cell.push('\n'),
                Some(other) => {
                    cell.push('\\');
                    cell.push(other);
                }
                None => cell.push('\\'),
            },
            '|' => {
                cells.push(cell.trim().to_owned());
                cell.clear();
                closed = true;
            }
            other => cell.push(other),
        }
    }
    closed.then_some(cells)
}

impl Step {
    fn table(&mut self) -> &mut Vec<Vec<String>> {
        self.table.get_or_insert_with(Vec::new)
    }

    fn with(&self, values: &[(String, String)]) -> Step {
        let fill = |text: &str| {
            values.iter().fold(text.to_owned(), |text, (name, value)| {
                text.replace(&format!("<{name}>"), value)
            })
        };
        Step {
            text: fill(&self.text),
            table: self.table.as_ref().map(|rows| {
                rows.iter()
                    .map(|row| row.iter().map(|cell| fill(cell)).collect())
                    .collect()
            }),
        }
    }
}

/// The scenarios of a feature file, outlines expanded, the background first.
fn cases(path: &Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap();
    let parsed = parse(&text, &path.display().to_string());
    let placeholder = Regex::new(r"<[^>\s]+>").unwrap();
    let mut out = Vec::new();
    for outline in &parsed.scenarios {
        let case = |values: &[(String, String)]| Case {
            feature: parsed.feature.clone(),
            scenario: outline.name.clone(),
            example: values
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            steps: parsed
                .background
                .iter()
                .chain(&outline.steps)
                .map(|s| s.with(values))
                .collect(),
        };
        if outline.examples.is_empty() {
            out.push(case(&[]));
        }
        for table in &outline.examples {
            let (header, rows) = table.split_first().expect("an Examples table has a header");
            for row in rows {
                assert_eq!(row.len(), header.len(), "{}: {row:?}", outline.name);
                let values: Vec<(String, String)> =
                    header.iter().cloned().zip(row.iter().cloned()).collect();
                let case = case(&values);
                for step in &case.steps {
                    let left = placeholder.find(&step.text);
                    assert!(left.is_none(), "{}: {left:?} has no column", outline.name);
                }
                out.push(case);
            }
        }
    }
    out
}

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/openfeature")
}

/// The test server's address and an sdk token for its environment.
struct Server {
    base: String,
    token: String,
}

static SERVER: OnceLock<Server> = OnceLock::new();

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Boolean,
    String,
    Integer,
    Float,
    Object,
}

impl Kind {
    fn parse(name: &str) -> Kind {
        match name {
            "Boolean" => Kind::Boolean,
            "String" => Kind::String,
            "Integer" => Kind::Integer,
            "Float" => Kind::Float,
            "Object" => Kind::Object,
            other => panic!("unknown flag type {other:?}"),
        }
    }

    /// A value as the feature files write it.
    fn value(self, text: &str) -> Value {
        match self {
            Kind::Boolean => Value::Bool(text.parse().expect("a boolean")),
            Kind::String => Value::String(text.to_owned()),
            Kind::Integer => Value::Int(text.parse().expect("an integer")),
            Kind::Float => Value::Float(text.parse().expect("a float")),
            Kind::Object => {
                let json: Json =
                    serde_json::from_str(&text.replace("\\\"", "\"")).expect("a JSON object");
                to_of_value(&json).expect("not null")
            }
        }
    }
}

/// An evaluation's details, of any type; an `Err` read as the spec's
/// client reports it (the fallback, `ERROR`, the code).
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    flag_key: String,
    value: Value,
    variant: Option<String>,
    reason: Option<String>,
    error_code: Option<String>,
    metadata: FlagMetadata,
}

impl Outcome {
    fn of<T: Into<Value>>(
        key: &str,
        fallback: &Value,
        result: EvaluationResult<EvaluationDetails<T>>,
    ) -> Outcome {
        match result {
            Ok(details) => {
                let d = details.into_value();
                Outcome {
                    flag_key: d.flag_key,
                    value: d.value,
                    variant: d.variant,
                    reason: d.reason.map(|r| r.to_string()),
                    error_code: None,
                    metadata: d.flag_metadata,
                }
            }
            Err(EvaluationError { code, .. }) => Outcome {
                flag_key: key.to_owned(),
                value: fallback.clone(),
                variant: None,
                reason: Some("ERROR".into()),
                error_code: Some(code.to_string()),
                metadata: FlagMetadata::default(),
            },
        }
    }
}

/// The flag a scenario evaluates.
#[derive(Debug, Clone)]
struct Flag {
    kind: Kind,
    key: String,
    fallback: Value,
}

/// One scenario's state.
#[derive(Default)]
struct Conformance {
    /// The Guidon client behind the provider (its own handle, to close it).
    guidon: Option<Client>,
    /// A second provider over the same client, to read its status.
    provider: Option<GuidonProvider>,
    of: Option<Arc<open_feature::Client>>,
    flag: Option<Flag>,
    context: EvaluationContext,
    /// The context as it was given, for the immutability scenario.
    given_context: Option<EvaluationContext>,
    options: Option<EvaluationOptions>,
    hook_log: Arc<Mutex<Vec<String>>>,
    outcome: Option<Outcome>,
    first_outcome: Option<Outcome>,
}

impl fmt::Debug for Conformance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conformance")
            .field("status", &self.guidon.as_ref().map(Client::status))
            .field("flag", &self.flag)
            .field("context", &self.context)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl Conformance {
    async fn use_client(&mut self, client: Client) {
        self.close().await.unwrap();
        let mut api = OpenFeature::default();
        api.set_provider(GuidonProvider::new(client.clone())).await;
        self.of = Some(Arc::new(api.create_client()));
        self.provider = Some(GuidonProvider::new(client.clone()));
        self.guidon = Some(client);
    }

    async fn close(&mut self) -> Result<(), guidon_client::ClientError> {
        match self.guidon.take() {
            Some(client) => client.close().await,
            None => Ok(()),
        }
    }

    fn flag(&self) -> &Flag {
        self.flag.as_ref().expect("a flag was given")
    }

    fn outcome(&self) -> &Outcome {
        self.outcome.as_ref().expect("the flag was evaluated")
    }

    async fn evaluate(&self, options: Option<&EvaluationOptions>) -> Outcome {
        let of = self.of.clone().expect("a provider was given");
        evaluate(
            of,
            self.flag().clone(),
            self.context.clone(),
            options.cloned(),
        )
        .await
    }
}

async fn evaluate(
    of: Arc<open_feature::Client>,
    flag: Flag,
    ctx: EvaluationContext,
    options: Option<EvaluationOptions>,
) -> Outcome {
    let (key, fallback, ctx, options) = (&flag.key, &flag.fallback, Some(&ctx), options.as_ref());
    match flag.kind {
        Kind::Boolean => Outcome::of(key, fallback, of.get_bool_details(key, ctx, options).await),
        Kind::String => Outcome::of(
            key,
            fallback,
            of.get_string_details(key, ctx, options).await,
        ),
        Kind::Integer => Outcome::of(key, fallback, of.get_int_details(key, ctx, options).await),
        Kind::Float => Outcome::of(key, fallback, of.get_float_details(key, ctx, options).await),
        Kind::Object => Outcome::of(
            key,
            fallback,
            of.get_struct_details::<StructValue>(key, ctx, options)
                .await,
        ),
    }
}

/// Records its calls in a shared log, for the hook-order scenario.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn record(&self, stage: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{stage} {}", self.name));
    }
}

#[open_feature::async_trait]
impl Hook for Recorder {
    async fn before<'a>(
        &self,
        _: &HookContext<'a>,
        _: Option<&'a HookHints>,
    ) -> Result<Option<EvaluationContext>, EvaluationError> {
        self.record("before");
        Ok(None)
    }

    async fn after<'a>(
        &self,
        _: &HookContext<'a>,
        _: &EvaluationDetails<Value>,
        _: Option<&'a HookHints>,
    ) -> Result<(), EvaluationError> {
        self.record("after");
        Ok(())
    }

    async fn error<'a>(&self, _: &HookContext<'a>, _: &EvaluationError, _: Option<&'a HookHints>) {
        self.record("error");
    }

    async fn finally<'a>(
        &self,
        _: &HookContext<'a>,
        _: &EvaluationDetails<Value>,
        _: Option<&'a HookHints>,
    ) {
        self.record("finally");
    }
}

/// Waits (with a guard) until the client reaches `status`.
async fn wait_status(client: &Client, status: Status) {
    let mut rx = client.watch_status();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| *s == status))
        .await
        .unwrap_or_else(|_| panic!("the client never became {status:?}: {:?}", client.status()))
        .unwrap();
}

/// The step definitions: each step of the suites must match exactly one.
#[derive(Debug, Clone, Copy)]
enum Def {
    Provider,
    Flag,
    ContextField,
    ContextNull,
    ModifiableContext,
    Hooks,
    Evaluated,
    EvaluatedWithOptions,
    EvaluatedAsync,
    Value,
    Reason,
    ErrorCode,
    FlagKey,
    Variant,
    MetadataContains,
    MetadataEmpty,
    ProviderStatus,
    Completed,
    HooksRan,
    HookOrder,
    ContextUnmodified,
    DetailsImmutable,
}

#[rustfmt::skip]
const DEFS: &[(Def, &str)] = &[
    (Def::Provider, r"^a (stable|not ready|error|fatal|stale) provider$"),
    (Def::Flag, r#"^a (Boolean|String|Integer|Float|Object)-flag with key "(.*)" and a fallback value "(.*)"$"#),
    (Def::ContextField, r#"^a context containing a key "(.*)", with type "(.*)" and with value "(.*)"$"#),
    (Def::ContextNull, r#"^a context containing a key "(.*)" with null value$"#),
    (Def::ModifiableContext, r"^an evaluation context with modifiable data$"),
    (Def::Hooks, r"^evaluation options containing specific hooks$"),
    (Def::Evaluated, r"^the flag was evaluated with details$"),
    (Def::EvaluatedWithOptions, r"^the flag was evaluated with details using the evaluation options$"),
    (Def::EvaluatedAsync, r"^the flag was evaluated with details asynchronously$"),
    (Def::Value, r#"^the resolved details value should be "(.*)"$"#),
    (Def::Reason, r#"^the reason should be "(.*)"$"#),
    (Def::ErrorCode, r#"^the error-code should be "(.*)"$"#),
    (Def::FlagKey, r#"^the flag key should be "(.*)"$"#),
    (Def::Variant, r#"^the variant should be "(.*)"$"#),
    (Def::MetadataContains, r"^the resolved metadata should contain$"),
    (Def::MetadataEmpty, r"^the resolved metadata is empty$"),
    (Def::ProviderStatus, r#"^the provider status should be "(.*)"$"#),
    (Def::Completed, r"^the evaluation should complete without blocking$"),
    (Def::HooksRan, r"^the specified hooks should execute during evaluation$"),
    (Def::HookOrder, r"^the hook order should be maintained$"),
    (Def::ContextUnmodified, r"^the original evaluation context should remain unmodified$"),
    (Def::DetailsImmutable, r"^the evaluation details should be immutable$"),
];

static COMPILED: LazyLock<Vec<(Def, Regex)>> = LazyLock::new(|| {
    DEFS.iter()
        .map(|(def, re)| (*def, Regex::new(re).unwrap()))
        .collect()
});

/// The one definition matching `text`, with its captures.
fn definition(text: &str) -> (Def, Vec<String>) {
    let mut found = COMPILED.iter().filter_map(|(def, re)| {
        re.captures(text).map(|c| {
            let captures = c
                .iter()
                .skip(1)
                .map(|m| m.map_or("", |m| m.as_str()).to_owned());
            (*def, captures.collect::<Vec<_>>())
        })
    });
    let first = found
        .next()
        .unwrap_or_else(|| panic!("no step definition matches {text:?}"));
    assert!(
        found.next().is_none(),
        "more than one step definition matches {text:?}"
    );
    first
}

impl Conformance {
    async fn step(&mut self, step: &Step) {
        let (def, c) = definition(&step.text);
        match def {
            Def::Provider => self.given_provider(&c[0]).await,
            Def::Flag => {
                let kind = Kind::parse(&c[0]);
                self.flag = Some(Flag {
                    kind,
                    key: c[1].clone(),
                    fallback: kind.value(&c[2]),
                });
            }
            Def::ContextField => {
                let text = c[2].as_str();
                let field = match c[1].as_str() {
                    "String" => EvaluationContextFieldValue::String(text.to_owned()),
                    "Integer" => EvaluationContextFieldValue::Int(text.parse().unwrap()),
                    "Float" => EvaluationContextFieldValue::Float(text.parse().unwrap()),
                    "Boolean" => EvaluationContextFieldValue::Bool(text.parse().unwrap()),
                    other => panic!("unknown context type {other:?}"),
                };
                self.context.custom_fields.insert(c[0].clone(), field);
            }
            Def::ContextNull => {
                let null = EvaluationContextFieldValue::new_struct(Json::Null);
                self.context.custom_fields.insert(c[0].clone(), null);
            }
            Def::ModifiableContext => {
                self.context = EvaluationContext::default()
                    .with_targeting_key("user-1")
                    .with_custom_field("email", "ballmer@macrosoft.com")
                    .with_custom_field("age", 65_i64);
                self.given_context = Some(self.context.clone());
            }
            Def::Hooks => {
                let log = self.hook_log.clone();
                let first = Recorder {
                    name: "first",
                    log: log.clone(),
                };
                let second = Recorder {
                    name: "second",
                    log,
                };
                self.options = Some(
                    EvaluationOptions::default()
                        .with_hook(first)
                        .with_hook(second),
                );
            }
            Def::Evaluated => {
                let outcome = self.evaluate(None).await;
                self.first_outcome.get_or_insert_with(|| outcome.clone());
                self.outcome = Some(outcome);
            }
            Def::EvaluatedWithOptions => {
                let options = self.options.clone().expect("evaluation options were given");
                self.outcome = Some(self.evaluate(Some(&options)).await);
            }
            Def::EvaluatedAsync => {
                // On a task of the multi-threaded runtime: the evaluation is
                // a Send future that holds no thread while it waits.
                let of = self.of.clone().expect("a provider was given");
                let task = tokio::spawn(evaluate(
                    of,
                    self.flag().clone(),
                    self.context.clone(),
                    None,
                ));
                let joined = tokio::time::timeout(Duration::from_secs(20), task).await;
                self.outcome = Some(joined.expect("the evaluation finished").expect("no panic"));
            }
            Def::Value => {
                let expected = self.flag().kind.value(&c[0]);
                assert_eq!(self.outcome().value, expected, "{:?}", self.outcome());
            }
            Def::Reason => {
                let reason = self.outcome().reason.as_deref();
                assert_eq!(reason, Some(c[0].as_str()), "{:?}", self.outcome());
            }
            Def::ErrorCode => {
                let code = self.outcome().error_code.as_deref();
                assert_eq!(code, Some(c[0].as_str()), "{self:?}");
            }
            Def::FlagKey => assert_eq!(self.outcome().flag_key, c[0]),
            Def::Variant => {
                let variant = self.outcome().variant.as_deref();
                assert_eq!(variant, Some(c[0].as_str()), "{:?}", self.outcome());
            }
            Def::MetadataContains => {
                let table = step.table.as_ref().expect("a table");
                let metadata = &self.outcome().metadata.values;
                for row in table.iter().skip(1) {
                    let (key, text) = (&row[0], row[2].as_str());
                    let expected = match row[1].as_str() {
                        "String" => FlagMetadataValue::String(text.to_owned()),
                        "Integer" => FlagMetadataValue::Int(text.parse().unwrap()),
                        "Float" => FlagMetadataValue::Float(text.parse().unwrap()),
                        "Boolean" => FlagMetadataValue::Bool(text.parse().unwrap()),
                        other => panic!("unknown metadata type {other:?}"),
                    };
                    assert_eq!(metadata.get(key), Some(&expected), "{key}: {metadata:?}");
                }
            }
            Def::MetadataEmpty => {
                let metadata = &self.outcome().metadata.values;
                assert!(metadata.is_empty(), "{metadata:?}");
            }
            Def::ProviderStatus => {
                let provider = self.provider.as_ref().expect("a provider was given");
                let status = match provider.status() {
                    ProviderStatus::NotReady => "NOT_READY",
                    ProviderStatus::Ready => "READY",
                    ProviderStatus::Error => "ERROR",
                    ProviderStatus::STALE => "STALE",
                };
                assert_eq!(status, c[0]);
            }
            Def::Completed => {
                let outcome = self.outcome();
                assert_eq!(outcome.error_code, None, "{outcome:?}");
                assert_eq!(outcome.flag_key, self.flag().key);
            }
            Def::HooksRan => {
                let log = self.hook_log.lock().unwrap().clone();
                for stage in ["before", "after", "finally"] {
                    for name in ["first", "second"] {
                        let entry = format!("{stage} {name}");
                        assert!(log.contains(&entry), "{entry} missing from {log:?}");
                    }
                }
                assert!(!log.iter().any(|e| e.starts_with("error")), "{log:?}");
            }
            Def::HookOrder => {
                // Spec 4.4.2: before hooks in order, after and finally in reverse.
                let log = self.hook_log.lock().unwrap().clone();
                let expected = [
                    "before first",
                    "before second",
                    "after second",
                    "after first",
                    "finally second",
                    "finally first",
                ];
                assert_eq!(log, expected);
            }
            Def::ContextUnmodified => {
                let given = self.given_context.as_ref().expect("a context was given");
                assert_eq!(&self.context, given);
            }
            Def::DetailsImmutable => {
                // The details are owned values: evaluating again leaves the
                // first ones as they were, and gives the same.
                let first = self.first_outcome.clone().expect("the flag was evaluated");
                let again = self.evaluate(None).await;
                assert_eq!(self.outcome(), &first);
                assert_eq!(again, first);
            }
        }
    }

    async fn given_provider(&mut self, kind: &str) {
        let server = SERVER.get().expect("the server runs");
        let nowhere = format!("http://127.0.0.1:{}", free_port());
        let client = match kind {
            "stable" => {
                let client = Client::builder(&server.base, &server.token)
                    .start_timeout(Duration::from_secs(20))
                    .build()
                    .await
                    .unwrap();
                assert_eq!(client.status(), Status::Ready, "{:?}", client.last_error());
                client
            }
            "not ready" => {
                let client = Client::builder(&nowhere, "gdn_nobody")
                    .start_timeout(Duration::from_millis(50))
                    .build()
                    .await
                    .unwrap();
                assert_eq!(client.status(), Status::Starting);
                client
            }
            "stale" => {
                let client = Client::builder(&nowhere, "gdn_nobody")
                    .bootstrap_file(testdata().join("flags.json"))
                    .build()
                    .await
                    .unwrap();
                assert_eq!(client.status(), Status::Stale);
                client
            }
            "error" | "fatal" => {
                let client = Client::builder(&server.base, "gdn_not_a_token")
                    .start_timeout(Duration::from_millis(50))
                    .build()
                    .await
                    .unwrap();
                wait_status(&client, Status::Error).await;
                client
            }
            other => panic!("unknown provider {other:?}"),
        };
        self.use_client(client).await;
    }
}

/// The last panic's message and place (the steps' assertions), taken by
/// the runner instead of being printed.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Runs one scenario in a fresh world: `Err` with the failing step.
async fn run_case(case: &Case) -> Result<(), String> {
    let mut world = Conformance::default();
    let mut result = Ok(());
    for step in &case.steps {
        if AssertUnwindSafe(world.step(step))
            .catch_unwind()
            .await
            .is_err()
        {
            let why = LAST_PANIC.lock().unwrap().take().unwrap_or_default();
            // One line per scenario in the report.
            let why = why.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            result = Err(format!("{:?}: {why}", step.text));
            break;
        }
    }
    if let Err(e) = world.close().await {
        result = result.and(Err(format!("closing the client: {e}")));
    }
    result
}

fn read_json(name: &str) -> Json {
    serde_json::from_slice(&std::fs::read(testdata().join(name)).unwrap()).unwrap()
}

/// `flags.json` says what `test-flags.json` says: the same variants and
/// values, all the weight on the default variant, disabled as disabled,
/// rules exactly where there is a `contextEvaluator`.
fn check_translation(source: &Json, translated: &Json) {
    let flags = translated["flags"].as_array().unwrap();
    let untranslated = ["null-default-flag", "undefined-default-flag"];
    let source = source.as_object().unwrap();
    assert_eq!(flags.len(), source.len() - untranslated.len());
    for (key, flag) in source {
        if untranslated.contains(&key.as_str()) {
            continue;
        }
        let ours = flags
            .iter()
            .find(|f| f["key"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} is not translated"));
        let variants: serde_json::Map<String, Json> = ours["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["key"].as_str().unwrap().to_owned(), v["value"].clone()))
            .collect();
        assert_eq!(&Json::Object(variants), &flag["variants"], "{key}");
        let default = flag["defaultVariant"].as_str().unwrap();
        let heavy: Vec<&Json> = ours["variants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["weight"] == 100)
            .map(|v| &v["key"])
            .collect();
        assert_eq!(heavy, [default], "{key}");
        let disabled = flag["disabled"].as_bool().unwrap_or(false);
        assert_eq!(ours["enabled"], !disabled, "{key}");
        let targeted = flag.get("contextEvaluator").is_some();
        assert_eq!(ours.get("rules").is_some(), targeted, "{key}");
        let static_on = !disabled && !targeted;
        assert_eq!(ours.get("override").is_some(), static_on, "{key}");
        if static_on {
            assert_eq!(ours["override"]["variant"], default, "{key}");
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let flags = read_json("flags.json");
    check_translation(&read_json("test-flags.json"), &flags);
    let cases: Vec<Case> = ["evaluation_v2.feature", "metadata.feature"]
        .iter()
        .flat_map(|file| cases(&testdata().join(file)))
        .collect();

    let db = sqlite("gherkin");
    let server = TestServer::start(&db.url).await;
    server
        .put(&format!("/api/v1/envs/{ENV}/flags"), flags)
        .await;
    let token = server.sdk_token("gherkin", ENV).await;
    let base = server.base.clone();
    assert!(SERVER.set(Server { base, token }).is_ok());

    // The steps' panics (on this thread) are reported per scenario; any
    // other thread's (the server's, say) as usual.
    let default_hook: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let runner = std::thread::current().id();
    let others = default_hook.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == runner {
            *LAST_PANIC.lock().unwrap() = Some(info.to_string());
        } else {
            others(info);
        }
    }));
    let mut unexpected = Vec::new();
    let known = known_cases();
    let mut matched = vec![0_usize; known.len()];
    let (mut passed, mut known_failed) = (0, 0);
    for case in &cases {
        let result = run_case(case).await;
        let index = known_index(case);
        if let Some(i) = index {
            matched[i] += 1;
        }
        let name = if case.example.is_empty() {
            format!("{} / {}", case.feature, case.scenario)
        } else {
            format!("{} / {} [{}]", case.feature, case.scenario, case.example)
        };
        let line = match (&result, index.map(|i| known[i].0)) {
            (Ok(()), None) => {
                passed += 1;
                format!("ok        {name}")
            }
            (Err(why), Some(i)) => {
                known_failed += 1;
                format!("known     {name}: {} (fails at {why})", KNOWN[i].why)
            }
            (Err(why), None) => {
                unexpected.push(format!("{name}: {why}"));
                format!("FAILED    {name}: {why}")
            }
            (Ok(()), Some(_)) => {
                unexpected.push(format!("{name}: passes, but is listed in KNOWN"));
                format!("PASSED    {name}: listed in KNOWN, remove it")
            }
        };
        println!("{line}");
    }
    std::panic::set_hook(Box::new(move |info| default_hook(info)));
    server.stop().await;

    println!(
        "{} scenarios: {passed} passed, {known_failed} known not to pass (of {}), {} unexpected",
        cases.len(),
        known.len(),
        unexpected.len()
    );
    for (&(i, example), n) in known.iter().zip(&matched) {
        let name = KNOWN[i].scenario;
        assert_eq!(*n, 1, "KNOWN {name:?} {example:?} matches {n} scenarios");
    }
    assert!(
        unexpected.is_empty(),
        "unexpected outcomes:\n{}",
        unexpected.join("\n")
    );
    assert_eq!(passed + known_failed, cases.len());
}
