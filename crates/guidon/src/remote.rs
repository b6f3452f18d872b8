//! The admin commands' client side: `guidon flags …`, `guidon envs …` and
//! `guidon token …` against a server's admin API.
//!
//! Each command is one or two HTTP requests. A server error becomes one line
//! with the server's message (and, for a rejected definition, every problem
//! with its path); `--json` prints the server's answer as it was sent, keys
//! in the server's order, pretty.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, IF_MATCH};
use reqwest::{Method, StatusCode, Url};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{EnvsCommand, FlagsCommand, RemoteArgs, TokenCommand};

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

// ---- commands ----

pub(crate) fn flags(args: &RemoteArgs, command: FlagsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    block_on(async move {
        match command {
            FlagsCommand::List { env } => flags_list(&client, &env).await,
            FlagsCommand::Get { key, env } => flags_get(&client, &env, &key).await,
            FlagsCommand::Set {
                env,
                file,
                if_version,
            } => flags_set(&client, &env, &file, if_version).await,
            FlagsCommand::Delete {
                key,
                env,
                if_version,
            } => flags_delete(&client, &env, &key, if_version).await,
            FlagsCommand::Toggle {
                key,
                env,
                if_version,
            } => flags_toggle(&client, &env, &key, if_version).await,
            FlagsCommand::History { key, env } => flags_history(&client, &env, &key).await,
            FlagsCommand::Revert { key, env, version } => {
                flags_revert(&client, &env, &key, version).await
            }
            FlagsCommand::Export { env, yaml } => flags_export(&client, &env, yaml).await,
            FlagsCommand::Import { env, file } => flags_import(&client, &env, &file).await,
        }
    })
}

pub(crate) fn envs(args: &RemoteArgs, command: EnvsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    block_on(async move {
        match command {
            EnvsCommand::List => envs_list(&client).await,
            EnvsCommand::Create { name } => envs_create(&client, &name).await,
            EnvsCommand::Delete { name, force } => envs_delete(&client, &name, force).await,
        }
    })
}

pub(crate) fn token(args: &RemoteArgs, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(args)?;
    block_on(async move {
        match command {
            TokenCommand::Create { name, role, env } => {
                token_create(&client, &name, &role, env.as_deref()).await
            }
            TokenCommand::List => token_list(&client).await,
            TokenCommand::Revoke { name } => token_revoke(&client, &name).await,
        }
    })
}

fn block_on<F>(future: F) -> anyhow::Result<ExitCode>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(future)?;
    Ok(ExitCode::SUCCESS)
}

async fn flags_list(client: &Client, env: &str) -> anyhow::Result<()> {
    check_key("environment", env)?;
    let reply = client
        .call(Call::new(Method::GET, &["envs", env, "flags"]))
        .await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let file = reply.value()?;
    let flags = array(&file, "flags")?;
    let segments = file
        .get("segments")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut out = String::new();
    if !flags.is_empty() {
        let rows = flags
            .iter()
            .map(|f| {
                vec![
                    text_of(f, "key"),
                    on_off(f.get("enabled")).to_owned(),
                    variant_keys(f),
                    f.get("rules")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                        .to_string(),
                    rollout(f),
                    shorten(&text_of(f, "description"), 60),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "KEY",
                "ENABLED",
                "VARIANTS",
                "RULES",
                "ROLLOUT",
                "DESCRIPTION",
            ],
            rows,
        ));
    }
    let revision = reply
        .header("x-guidon-revision")
        .map(|r| format!(" at revision {r}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} flag{} and {} segment{} in {}{revision}",
        flags.len(),
        plural(flags.len()),
        segments,
        plural(segments),
        quoted(env),
    );
    emit(&out)
}

async fn flags_get(client: &Client, env: &str, key: &str) -> anyhow::Result<()> {
    check_key("environment", env)?;
    check_key("flag", key)?;
    let reply = client
        .call(Call::new(Method::GET, &["envs", env, "flags", key]))
        .await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    // The definition as the server sent it, its fields in the model's order.
    let doc = reply.doc()?;
    let definition = doc
        .field("flag")
        .ok_or_else(|| reply.unexpected("no \"flag\""))?;
    let value = reply.value()?;
    let enabled = on_off(value.get("flag").and_then(|f| f.get("enabled")));
    let head = format!(
        "flag {} in {}: {enabled}, version {}, revision {}",
        quoted(key),
        quoted(env),
        number(&value, "version"),
        number(&value, "revision"),
    );
    emit(&format!("{head}\n{}\n", to_pretty(definition)?))
}

async fn flags_set(
    client: &Client,
    env: &str,
    file: &Path,
    if_version: Option<u64>,
) -> anyhow::Result<()> {
    check_key("environment", env)?;
    let body = BodyFile::read(file)?;
    let parsed = body.parse()?;
    let key = match parsed.get("key") {
        Some(Value::String(key)) => key.clone(),
        Some(other) => bail!("{}: \"key\" must be a string, not {other}", file.display()),
        None if parsed.get("flags").is_some() => bail!(
            "{} is a flag file (it has \"flags\"), not one flag: use `guidon flags import` to replace a whole environment",
            file.display()
        ),
        None if !parsed.is_object() => bail!("{} must hold one flag object", file.display()),
        None => bail!("{}: the flag has no \"key\"", file.display()),
    };
    check_key("flag", &key)?;
    let mut call = Call::new(Method::PUT, &["envs", env, "flags", &key]).body(body);
    if let Some(v) = if_version {
        call = call.header(IF_MATCH, v.to_string());
    }
    let reply = client.call(call).await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    let what = if reply.status == StatusCode::CREATED {
        "created"
    } else {
        "updated"
    };
    emit(&format!(
        "{what} flag {} in {}: version {}, revision {}\n",
        quoted(&key),
        quoted(env),
        number(&value, "version"),
        number(&value, "revision"),
    ))
}

async fn flags_delete(
    client: &Client,
    env: &str,
    key: &str,
    if_version: Option<u64>,
) -> anyhow::Result<()> {
    check_key("environment", env)?;
    check_key("flag", key)?;
    let mut call = Call::new(Method::DELETE, &["envs", env, "flags", key]);
    if let Some(v) = if_version {
        call = call.header(IF_MATCH, v.to_string());
    }
    let reply = client.call(call).await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    emit(&format!(
        "deleted flag {} from {} (it was version {}), revision {}\n",
        quoted(key),
        quoted(env),
        number(&value, "version"),
        number(&value, "revision"),
    ))
}

async fn flags_toggle(
    client: &Client,
    env: &str,
    key: &str,
    if_version: Option<u64>,
) -> anyhow::Result<()> {
    check_key("environment", env)?;
    check_key("flag", key)?;
    let path = ["envs", env, "flags", key];
    let current = client.call(Call::new(Method::GET, &path)).await?.value()?;
    let read_version = current
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            anyhow!("unexpected answer from the server: no \"version\" for flag {key:?}")
        })?;
    let mut flag = current
        .get("flag")
        .filter(|f| f.is_object())
        .cloned()
        .ok_or_else(|| {
            anyhow!("unexpected answer from the server: no \"flag\" object for {key:?}")
        })?;
    let enabled = match flag.get("enabled") {
        Some(Value::Bool(b)) => *b,
        _ => bail!("unexpected answer from the server: flag {key:?} has no boolean \"enabled\""),
    };
    flag["enabled"] = Value::Bool(!enabled);
    // If-Match: whoever changed the flag since it was read wins, and this
    // toggle is refused rather than flipping a definition it never saw.
    let expected = if_version.unwrap_or(read_version);
    let body = serde_json::to_vec(&flag).context("encoding the flag")?;
    let reply = client
        .call(
            Call::new(Method::PUT, &path)
                .header(IF_MATCH, expected.to_string())
                .body(BodyFile::json(body)),
        )
        .await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    emit(&format!(
        "flag {} in {} is now {}: version {}, revision {}\n",
        quoted(key),
        quoted(env),
        if enabled { "off" } else { "on" },
        number(&value, "version"),
        number(&value, "revision"),
    ))
}

async fn flags_history(client: &Client, env: &str, key: &str) -> anyhow::Result<()> {
    check_key("environment", env)?;
    check_key("flag", key)?;
    let reply = client
        .call(Call::new(
            Method::GET,
            &["envs", env, "flags", key, "history"],
        ))
        .await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    let entries = array(&value, "history")?;
    if entries.is_empty() {
        return emit(&format!(
            "flag {} in {} has no history\n",
            quoted(key),
            quoted(env)
        ));
    }
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                number(e, "version"),
                number(e, "revision"),
                text_of(e, "op"),
                shorten(&text_of(e, "actor"), 40),
                e.get("at_ms")
                    .and_then(Value::as_i64)
                    .map_or_else(|| "-".to_owned(), format_ms),
                what_changed(e.get("before"), e.get("after")),
            ]
        })
        .collect();
    emit(&table(
        &["VERSION", "REVISION", "OP", "ACTOR", "AT", "CHANGE"],
        rows,
    ))
}

async fn flags_revert(client: &Client, env: &str, key: &str, version: u64) -> anyhow::Result<()> {
    check_key("environment", env)?;
    check_key("flag", key)?;
    let body = BodyFile::json(json!({ "version": version }).to_string().into_bytes());
    let reply = client
        .call(Call::new(Method::POST, &["envs", env, "flags", key, "revert"]).body(body))
        .await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    emit(&format!(
        "reverted flag {} in {} to its version {version}: now version {}, revision {}\n",
        quoted(key),
        quoted(env),
        number(&value, "version"),
        number(&value, "revision"),
    ))
}

async fn flags_export(client: &Client, env: &str, yaml: bool) -> anyhow::Result<()> {
    check_key("environment", env)?;
    if yaml && client.json {
        bail!("--yaml and --json cannot be used together");
    }
    let accept = if yaml {
        "application/yaml"
    } else {
        "application/json"
    };
    let reply = client
        .call(Call::new(Method::GET, &["envs", env, "flags"]).header(ACCEPT, accept.to_owned()))
        .await?;
    if yaml {
        let text = String::from_utf8(reply.bytes.clone())
            .map_err(|_| reply.unexpected("the YAML is not UTF-8"))?;
        if !text.ends_with('\n') {
            return emit(&format!("{text}\n"));
        }
        return emit(&text);
    }
    emit(&reply.pretty()?)
}

async fn flags_import(client: &Client, env: &str, file: &Path) -> anyhow::Result<()> {
    check_key("environment", env)?;
    let body = BodyFile::read(file)?;
    // A file that is not even JSON/YAML is named here, not by the server.
    let parsed = body.parse()?;
    if parsed.get("key").is_some() && parsed.get("flags").is_none() {
        bail!(
            "{} holds one flag, not a flag file: use `guidon flags set` for one flag (import would delete every other flag)",
            file.display()
        );
    }
    let reply = client
        .call(Call::new(Method::PUT, &["envs", env, "flags"]).body(body))
        .await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    let changes = array(&value, "changes")?;
    let revision = number(&value, "revision");
    if changes.is_empty() {
        return emit(&format!(
            "nothing to change in {}: it already holds this file (revision {revision})\n",
            quoted(env)
        ));
    }
    let mut out = format!(
        "imported into {}: revision {revision}, {} change{}\n",
        quoted(env),
        changes.len(),
        plural(changes.len())
    );
    let rows = changes
        .iter()
        .map(|c| {
            vec![
                text_of(c, "op"),
                text_of(c, "kind"),
                text_of(c, "key"),
                format!("version {}", number(c, "version")),
            ]
        })
        .collect();
    for line in table(&["OP", "KIND", "KEY", "VERSION"], rows)
        .lines()
        .skip(1)
    {
        let _ = writeln!(out, "  {line}");
    }
    emit(&out)
}

async fn envs_list(client: &Client) -> anyhow::Result<()> {
    let reply = client.call(Call::new(Method::GET, &["envs"])).await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    let envs = array(&value, "environments")?;
    if envs.is_empty() {
        return emit("no environments (create one with `guidon envs create NAME`)\n");
    }
    let rows = envs
        .iter()
        .map(|e| vec![text_of(e, "name"), number(e, "revision")])
        .collect();
    emit(&table(&["NAME", "REVISION"], rows))
}

async fn envs_create(client: &Client, name: &str) -> anyhow::Result<()> {
    check_key("environment", name)?;
    let body = BodyFile::json(json!({ "name": name }).to_string().into_bytes());
    let reply = client
        .call(Call::new(Method::POST, &["envs"]).body(body))
        .await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    emit(&format!("created environment {}\n", quoted(name)))
}

async fn envs_delete(client: &Client, name: &str, force: bool) -> anyhow::Result<()> {
    check_key("environment", name)?;
    let mut call = Call::new(Method::DELETE, &["envs", name]);
    if force {
        call = call.query("force", "true");
    }
    let reply = client.call(call).await?;
    if client.json {
        // 204: the server says nothing; say what was done, as JSON.
        return emit(&reply.pretty_or(json!({ "deleted": name }))?);
    }
    emit(&format!("deleted environment {}\n", quoted(name)))
}

async fn token_create(
    client: &Client,
    name: &str,
    role: &str,
    env: Option<&str>,
) -> anyhow::Result<()> {
    check_segment("token name", name)?;
    let mut request = json!({ "name": name, "role": role });
    if let Some(env) = env {
        check_key("environment", env)?;
        request["env"] = json!(env);
    }
    let reply = client
        .call(
            Call::new(Method::POST, &["tokens"])
                .body(BodyFile::json(request.to_string().into_bytes())),
        )
        .await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    let secret = value
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| reply.unexpected("no \"token\" secret"))?;
    let scope = match value.get("env").and_then(Value::as_str) {
        Some(env) => format!(" for environment {}", quoted(env)),
        None => String::new(),
    };
    emit(&format!(
        "created {} token {}{scope}; its secret, shown only this once:\n{}\n",
        text_of(&value, "role"),
        quoted(name),
        clean(secret),
    ))
}

async fn token_list(client: &Client) -> anyhow::Result<()> {
    let reply = client.call(Call::new(Method::GET, &["tokens"])).await?;
    if client.json {
        return emit(&reply.pretty()?);
    }
    let value = reply.value()?;
    let tokens = array(&value, "tokens")?;
    if tokens.is_empty() {
        return emit("no tokens\n");
    }
    let rows = tokens
        .iter()
        .map(|t| {
            let when = |field| {
                t.get(field)
                    .and_then(Value::as_i64)
                    .map_or_else(|| "-".to_owned(), format_ms)
            };
            vec![
                shorten(&text_of(t, "name"), 40),
                text_of(t, "role"),
                t.get("env")
                    .and_then(Value::as_str)
                    .map_or_else(|| "-".to_owned(), clean),
                when("created_at_ms"),
                when("last_used_at_ms"),
                if t.get("revoked").and_then(Value::as_bool) == Some(true) {
                    "revoked"
                } else {
                    "active"
                }
                .to_owned(),
            ]
        })
        .collect();
    emit(&table(
        &["NAME", "ROLE", "ENV", "CREATED", "LAST USED", "STATUS"],
        rows,
    ))
}

async fn token_revoke(client: &Client, name: &str) -> anyhow::Result<()> {
    check_segment("token name", name)?;
    let reply = client
        .call(Call::new(Method::DELETE, &["tokens", name]))
        .await?;
    if client.json {
        return emit(&reply.pretty_or(json!({ "revoked": name }))?);
    }
    emit(&format!("revoked token {}\n", quoted(name)))
}

// ---- the client ----

struct Client {
    http: reqwest::Client,
    /// The server's URL, ending in `/api/v1`.
    api: Url,
    /// As given, for messages.
    server: String,
    token: Option<String>,
    json: bool,
}

/// One request: method, path segments under `/api/v1`, and what goes with them.
struct Call {
    method: Method,
    segments: Vec<String>,
    query: Vec<(&'static str, &'static str)>,
    headers: HeaderMap,
    body: Option<BodyFile>,
}

impl Call {
    fn new(method: Method, segments: &[&str]) -> Call {
        Call {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
        }
    }

    fn header(mut self, name: reqwest::header::HeaderName, value: String) -> Call {
        if let Ok(value) = value.parse() {
            self.headers.insert(name, value);
        }
        self
    }

    fn query(mut self, name: &'static str, value: &'static str) -> Call {
        self.query.push((name, value));
        self
    }

    fn body(mut self, body: BodyFile) -> Call {
        self.body = Some(body);
        self
    }
}

/// A 2xx answer.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
    url: Url,
}

impl Client {
    fn new(args: &RemoteArgs) -> anyhow::Result<Client> {
        // An empty GUIDON_SERVER means the default, as an empty GUIDON_TOKEN means none.
        let server = match args.server.trim() {
            "" => DEFAULT_SERVER.to_owned(),
            given => given.to_owned(),
        };
        // `host:port` means plain HTTP.
        let with_scheme = if server.contains("://") {
            server.clone()
        } else {
            format!("http://{server}")
        };
        let mut api = Url::parse(&with_scheme)
            .map_err(|e| anyhow!("--server {server:?} is not a URL: {e}"))?;
        match api.scheme() {
            "http" => {}
            "https" => bail!(
                "--server {server}: this guidon is built without TLS, so it speaks only http://; \
                 reach an https server through a local TLS proxy"
            ),
            other => bail!("--server {server}: unsupported scheme {other:?}, use http://"),
        }
        if api.cannot_be_a_base() || api.host_str().is_none() {
            bail!("--server {server:?} is not an http:// URL with a host");
        }
        api.set_query(None);
        api.set_fragment(None);
        // The server's root, possibly under a proxy's prefix; a URL that
        // already ends in /api/v1 is taken as it is.
        let given_api = api.path_segments().is_some_and(|s| {
            s.filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .ends_with(&["api", "v1"])
        });
        let mut path = api
            .path_segments_mut()
            .map_err(|()| anyhow!("--server {server:?} cannot have a path"))?;
        path.pop_if_empty();
        if !given_api {
            path.extend(["api", "v1"]);
        }
        drop(path);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("guidon/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the HTTP client")?;
        let token = args
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(Client {
            http,
            api,
            server: without_trailing_slash(&with_scheme),
            token,
            json: args.json,
        })
    }

    async fn call(&self, call: Call) -> anyhow::Result<Reply> {
        // Every admin endpoint needs a token: say so before asking.
        let Some(token) = &self.token else {
            bail!(
                "no token: give --token TOKEN or set GUIDON_TOKEN (without one the server answers 401 Unauthorized)"
            );
        };
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(&call.segments);
        }
        let mut request = self
            .http
            .request(call.method, url.clone())
            .bearer_auth(token)
            .headers(call.headers);
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if let Some(body) = call.body {
            request = request
                .header(CONTENT_TYPE, body.content_type)
                .body(body.bytes);
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&e))?
            .to_vec();
        if !status.is_success() {
            return Err(self.refused(status, &bytes));
        }
        Ok(Reply {
            status,
            headers,
            bytes,
            url,
        })
    }

    /// The request never got an answer.
    fn transport(&self, e: &reqwest::Error) -> anyhow::Error {
        let cause = root_cause(e);
        let server = &self.server;
        if e.is_timeout() {
            anyhow!("the server at {server} did not answer in time ({cause})")
        } else if e.is_connect() {
            anyhow!(
                "cannot connect to the server at {server}: {cause} (is it running? set --server or GUIDON_SERVER)"
            )
        } else {
            anyhow!("request to the server at {server} failed: {cause}")
        }
    }

    /// A non-2xx answer, as one line.
    fn refused(&self, status: StatusCode, body: &[u8]) -> anyhow::Error {
        #[derive(Deserialize)]
        struct Problem {
            #[serde(default)]
            path: String,
            #[serde(default)]
            message: String,
        }
        #[derive(Deserialize)]
        struct ApiError {
            error: Option<String>,
            message: Option<String>,
            #[serde(default)]
            details: Vec<Problem>,
        }
        let code = status.as_u16();
        let Ok(error) = serde_json::from_slice::<ApiError>(body) else {
            // Not Guidon's JSON: a proxy, or not a Guidon server at all.
            let text = String::from_utf8_lossy(body);
            let text = shorten(text.trim(), 200);
            let reason = status.canonical_reason().unwrap_or("error");
            return if text.is_empty() {
                anyhow!("the server at {} answered {code} {reason}", self.server)
            } else {
                anyhow!(
                    "the server at {} answered {code} {reason}: {text}",
                    self.server
                )
            };
        };
        let name = error
            .error
            .as_deref()
            .map(clean)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let message = error.message.as_deref().map(clean).unwrap_or_default();
        if !error.details.is_empty() {
            let problems: Vec<String> = error
                .details
                .iter()
                .map(|p| {
                    if p.path.is_empty() {
                        clean(&p.message)
                    } else {
                        format!("{}: {}", clean(&p.path), clean(&p.message))
                    }
                })
                .collect();
            let n = problems.len();
            return anyhow!(
                "rejected ({code} {name}), {n} problem{}: {}",
                plural(n),
                problems.join("; ")
            );
        }
        let hint = match status {
            StatusCode::UNAUTHORIZED => "; check --token or GUIDON_TOKEN",
            StatusCode::FORBIDDEN => "; use a token allowed to do this",
            StatusCode::PRECONDITION_FAILED => {
                "; it was changed meanwhile: read it again and retry"
            }
            _ => "",
        };
        anyhow!("{message} ({code} {name}){hint}")
    }
}

impl Reply {
    fn value(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.bytes)
            .map_err(|e| self.unexpected(&format!("the answer is not JSON: {e}")))
    }

    fn doc(&self) -> anyhow::Result<Doc> {
        serde_json::from_slice(&self.bytes)
            .map_err(|e| self.unexpected(&format!("the answer is not JSON: {e}")))
    }

    /// The answer as the server sent it, indented.
    fn pretty(&self) -> anyhow::Result<String> {
        Ok(format!("{}\n", to_pretty(&self.doc()?)?))
    }

    /// [`Reply::pretty`], or `instead` for an answer without a body.
    fn pretty_or(&self, instead: Value) -> anyhow::Result<String> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            let text = serde_json::to_string_pretty(&instead).context("encoding JSON")?;
            return Ok(format!("{text}\n"));
        }
        self.pretty()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(clean)
    }

    fn unexpected(&self, what: &str) -> anyhow::Error {
        anyhow!("unexpected answer from {}: {what}", self.url)
    }
}

/// A request body read from a file (or standard input), with its content type.
struct BodyFile {
    name: String,
    bytes: Vec<u8>,
    content_type: &'static str,
}

impl BodyFile {
    fn read(path: &Path) -> anyhow::Result<BodyFile> {
        let (name, mut bytes) = if path == Path::new("-") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .context("reading standard input")?;
            ("standard input".to_owned(), bytes)
        } else {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            (path.display().to_string(), bytes)
        };
        // Editors on some systems save a byte-order mark; it is not JSON.
        if bytes.starts_with("\u{feff}".as_bytes()) {
            bytes.drain(..3);
        }
        let content_type = if is_yaml(path) {
            "application/yaml"
        } else {
            "application/json"
        };
        Ok(BodyFile {
            name,
            bytes,
            content_type,
        })
    }

    fn json(bytes: Vec<u8>) -> BodyFile {
        BodyFile {
            name: "request".to_owned(),
            bytes,
            content_type: "application/json",
        }
    }

    /// Parses the body here, so a syntax error names the file.
    fn parse(&self) -> anyhow::Result<Value> {
        let text = std::str::from_utf8(&self.bytes)
            .map_err(|_| anyhow!("{} is not UTF-8 text", self.name))?;
        if text.trim().is_empty() {
            bail!("{} is empty", self.name);
        }
        if self.content_type == "application/yaml" {
            serde_yaml_ng::from_str(text)
                .map_err(|e| anyhow!("{} is not valid YAML: {e}", self.name))
        } else {
            serde_json::from_str(text).map_err(|e| anyhow!("{} is not valid JSON: {e}", self.name))
        }
    }
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// Flag keys and environment names follow the server's key rule; checking it
/// here also keeps `.`, `..` and slashes out of the request path.
fn check_key(what: &str, key: &str) -> anyhow::Result<()> {
    if guidon_engine::is_valid_key(key) {
        Ok(())
    } else {
        bail!("invalid {what} {key:?}: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$")
    }
}

/// Any other name that goes in the path: URLs have no way to carry a
/// segment that is `.` or `..` (they are resolved away).
fn check_segment(what: &str, name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name == "." || name == ".." {
        bail!("invalid {what} {name:?}: it cannot be sent in a URL path");
    }
    Ok(())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &(dyn std::error::Error + 'static) = e;
    while let Some(source) = last.source() {
        last = source;
    }
    clean(&last.to_string())
}

fn without_trailing_slash(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

// ---- output ----

fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

/// Columns separated by two spaces, the last one not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{cell:<width$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Server text made safe for one terminal line.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn shorten(text: &str, max: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= max {
        return text;
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn array<'a>(value: &'a Value, field: &str) -> anyhow::Result<&'a Vec<Value>> {
    value
        .get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("unexpected answer from the server: no {field:?} list"))
}

fn text_of(value: &Value, field: &str) -> String {
    match value.get(field) {
        Some(Value::String(s)) => clean(s),
        Some(Value::Null) | None => String::new(),
        Some(other) => clean(&other.to_string()),
    }
}

fn number(value: &Value, field: &str) -> String {
    value
        .get(field)
        .and_then(Value::as_u64)
        .map_or_else(|| "?".to_owned(), |n| n.to_string())
}

fn on_off(enabled: Option<&Value>) -> &'static str {
    match enabled {
        Some(Value::Bool(true)) => "on",
        Some(Value::Bool(false)) => "off",
        _ => "?",
    }
}

fn variant_keys(flag: &Value) -> String {
    let keys: Vec<String> = flag
        .get("variants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| text_of(v, "key"))
        .collect();
    if keys.is_empty() {
        "-".to_owned()
    } else {
        shorten(&keys.join(","), 40)
    }
}

fn rollout(flag: &Value) -> String {
    match flag
        .get("rollout")
        .and_then(|r| r.get("percentage"))
        .and_then(Value::as_f64)
    {
        Some(p) => format!("{p}%"),
        None => "-".to_owned(),
    }
}

fn format_ms(ms: i64) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000))
        .map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// What one history entry changed: created, deleted, or the top-level
/// fields that differ (with `enabled`'s old and new value).
fn what_changed(before: Option<&Value>, after: Option<&Value>) -> String {
    fn present(v: Option<&Value>) -> Option<&Value> {
        v.filter(|v| !v.is_null())
    }
    match (present(before), present(after)) {
        (None, Some(_)) => "created".to_owned(),
        (Some(_), None) => "deleted".to_owned(),
        (None, None) => "-".to_owned(),
        (Some(before), Some(after)) => {
            let empty = serde_json::Map::new();
            let b = before.as_object().unwrap_or(&empty);
            let a = after.as_object().unwrap_or(&empty);
            let mut fields: Vec<&String> = b.keys().chain(a.keys()).collect();
            fields.sort();
            fields.dedup();
            let changed: Vec<String> = fields
                .into_iter()
                .filter(|f| b.get(*f) != a.get(*f))
                .map(|f| {
                    if f == "enabled" {
                        format!(
                            "enabled {}→{}",
                            on_off(b.get("enabled")),
                            on_off(a.get("enabled"))
                        )
                    } else {
                        clean(f)
                    }
                })
                .collect();
            if changed.is_empty() {
                "no change".to_owned()
            } else {
                changed.join(", ")
            }
        }
    }
}

fn to_pretty(doc: &Doc) -> anyhow::Result<String> {
    serde_json::to_string_pretty(doc).context("encoding JSON")
}

/// A JSON value whose objects keep their keys in the order the server sent
/// them (`serde_json::Value` sorts them: the workspace does not enable
/// `preserve_order`), so `--json` prints the answer verbatim.
enum Doc {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Doc>),
    Object(Vec<(String, Doc)>),
}

impl Doc {
    fn field(&self, name: &str) -> Option<&Doc> {
        match self {
            Doc::Object(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl Serialize for Doc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Doc::Null => serializer.serialize_unit(),
            Doc::Bool(b) => serializer.serialize_bool(*b),
            Doc::Number(n) => n.serialize(serializer),
            Doc::String(s) => serializer.serialize_str(s),
            Doc::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Doc::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Doc, D::Error> {
        deserializer.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Doc, E> {
        Ok(Doc::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Doc, E> {
        Ok(Doc::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Doc, E> {
        Ok(Doc::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Doc, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Doc::Null, Doc::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Doc, E> {
        Ok(Doc::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Doc, E> {
        Ok(Doc::String(v))
    }

    fn visit_unit<E>(self) -> Result<Doc, E> {
        Ok(Doc::Null)
    }

    fn visit_none<E>(self) -> Result<Doc, E> {
        Ok(Doc::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Doc, D::Error> {
        Doc::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Doc::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Doc>()? {
            fields.push((k, v));
        }
        Ok(Doc::Object(fields))
    }
}
