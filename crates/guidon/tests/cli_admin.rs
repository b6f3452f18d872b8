//! The admin commands (`guidon flags|envs|token …`) as a user runs them,
//! against a real server started in this process over a fresh SQLite file:
//! what they print, the JSON of `--json`, and one-line errors.

use std::process::{Command, Output};

use guidon_server::testing::{ADMIN, BlockingServer, TempDir, free_port};
use serde_json::{Value, json};

/// `guidon serve` on 127.0.0.1:0 over a fresh SQLite file, on a runtime of
/// its own, so the tests themselves stay plain blocking code that runs the
/// binary; and a directory for the files they pass it.
struct Server {
    url: String,
    dir: TempDir,
    server: BlockingServer,
}

impl Server {
    fn start(label: &str) -> Server {
        let server = BlockingServer::start(label);
        Server {
            url: server.base().to_owned(),
            dir: TempDir::new(label),
            server,
        }
    }

    /// Runs `guidon ARGS --server URL --token ADMIN`.
    fn run(&self, args: &[&str]) -> Output {
        self.run_as(Some(ADMIN), args)
    }

    fn run_as(&self, token: Option<&str>, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &self.url]);
        if let Some(token) = token {
            all.extend(["--token", token]);
        }
        guidon(&all, &[])
    }

    /// Runs it, which must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        succeeded(args, &self.run(args))
    }

    /// Runs it with `--json`, which must succeed and print one JSON document.
    fn json(&self, args: &[&str]) -> (String, Value) {
        let mut all = args.to_vec();
        all.push("--json");
        let stdout = self.ok(&all);
        let value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("guidon {all:?} --json printed no JSON ({e}): {stdout}"));
        (stdout, value)
    }

    /// Runs it, which must fail with one line on standard error; that line.
    fn fails(&self, args: &[&str]) -> String {
        failed(args, &self.run(args))
    }

    fn file(&self, name: &str, contents: &str) -> String {
        self.dir.file(name, contents)
    }
}

/// The binary with a clean environment: no GUIDON_SERVER or GUIDON_TOKEN
/// from the caller's shell, no proxy between it and 127.0.0.1.
fn guidon(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_guidon"));
    command.args(args);
    for var in [
        "GUIDON_SERVER",
        "GUIDON_TOKEN",
        "GUIDON_CA_CERT",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    command.envs(vars.iter().copied());
    command.output().expect("guidon runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "guidon {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn failed(args: &[&str], out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "guidon {args:?} should fail; stdout {} stderr {stderr}",
        text(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("guidon: "), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    stderr.trim_end().to_owned()
}

/// As the server stores it (weights are numbers with a fraction, a
/// variant's `enabled` is explicit), so what comes back compares equal.
fn checkout_flag() -> Value {
    json!({
        "key": "new_checkout",
        "description": "Single-page checkout",
        "enabled": true,
        "variants": [
            {"key": "control", "weight": 50.0, "enabled": true, "value": {"layout": "classic"}},
            {"key": "treatment", "weight": 50.0, "enabled": true, "value": {"layout": "single_page"}}
        ],
        "rollout": {"percentage": 10.0}
    })
}

/// The line of a table whose first column is `first`.
fn row<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{table}"))
}

/// `flags disable` / `enable` change `enabled` alone (the rollout and the
/// variants survive, where a PUT of `{"enabled": false}` would drop them),
/// and saying it twice changes nothing.
#[test]
fn enable_and_disable_keep_the_flag_and_are_idempotent() {
    let server = Server::start("enable");
    server.ok(&["envs", "create", "dev"]);
    let file = server.file("flag.json", &checkout_flag().to_string());
    server.ok(&["flags", "set", "--env", "dev", "--file", &file]);

    assert_eq!(
        server.ok(&["flags", "disable", "new_checkout", "--env", "dev"]),
        "flag \"new_checkout\" in \"dev\" is now off: version 2, revision 2\n"
    );
    assert_eq!(
        server.ok(&["flags", "disable", "new_checkout", "--env", "dev"]),
        "flag \"new_checkout\" in \"dev\" is already off: version 2, nothing changed\n"
    );
    let (_, now) = server.json(&["flags", "get", "new_checkout", "--env", "dev"]);
    let mut expected = checkout_flag();
    expected["enabled"] = json!(false);
    assert_eq!(now["flag"], expected, "only `enabled` changed");
    assert_eq!(now["revision"], 2);

    let (_, enabled) = server.json(&["flags", "enable", "new_checkout", "--env", "dev"]);
    assert_eq!(enabled["flag"], checkout_flag());
    assert_eq!(enabled["version"], 3);
    let (_, again) = server.json(&["flags", "enable", "new_checkout", "--env", "dev"]);
    assert_eq!(again["unchanged"], true);
    assert_eq!(again["version"], 3);

    let err = server.fails(&["flags", "disable", "missing", "--env", "dev"]);
    assert!(err.contains("missing") && err.contains("404"), "{err}");
}

#[test]
fn set_get_list_toggle_history_revert_delete() {
    let server = Server::start("lifecycle");
    assert_eq!(
        server.ok(&["envs", "create", "dev"]),
        "created environment \"dev\"\n"
    );
    let file = server.file("flag.json", &checkout_flag().to_string());

    let out = server.ok(&["flags", "set", "--env", "dev", "--file", &file]);
    assert_eq!(
        out,
        "created flag \"new_checkout\" in \"dev\": version 1, revision 1\n"
    );

    let out = server.ok(&["flags", "get", "new_checkout", "--env", "dev"]);
    let (head, definition) = out.split_once('\n').expect("two parts");
    assert_eq!(
        head,
        "flag \"new_checkout\" in \"dev\": on, version 1, revision 1"
    );
    let definition: Value = serde_json::from_str(definition).expect("the definition is JSON");
    assert_eq!(definition, checkout_flag());

    let list = server.ok(&["flags", "list", "--env", "dev"]);
    assert!(list.starts_with("KEY "), "{list}");
    let line = row(&list, "new_checkout");
    for cell in ["on", "control,treatment", "10%", "Single-page checkout"] {
        assert!(line.contains(cell), "{cell:?} in {line:?}");
    }
    assert!(
        list.ends_with("1 flag and 0 segments in \"dev\" at revision 1\n"),
        "{list}"
    );

    // Toggle: off, then on, each a new version read-then-written.
    assert_eq!(
        server.ok(&["flags", "toggle", "new_checkout", "--env", "dev"]),
        "flag \"new_checkout\" in \"dev\" is now off: version 2, revision 2\n"
    );
    assert_eq!(
        server.ok(&["flags", "toggle", "new_checkout", "--env", "dev"]),
        "flag \"new_checkout\" in \"dev\" is now on: version 3, revision 3\n"
    );
    // Someone else's change since version 2: the toggle is refused, not applied.
    let err = server.fails(&[
        "flags",
        "toggle",
        "new_checkout",
        "--env",
        "dev",
        "--if-version",
        "2",
    ]);
    assert!(err.contains("412"), "{err}");
    assert!(
        err.contains("expected 2, the current version is 3"),
        "{err}"
    );
    assert!(err.contains("retry"), "{err}");
    let (_, now) = server.json(&["flags", "get", "new_checkout", "--env", "dev"]);
    assert_eq!(now["version"], 3);
    assert_eq!(now["flag"]["enabled"], true);

    let history = server.ok(&["flags", "history", "new_checkout", "--env", "dev"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 4, "{history}");
    assert!(lines[0].starts_with("VERSION  REVISION  OP"), "{history}");
    assert!(row(&history, "1").ends_with("created"), "{history}");
    assert!(row(&history, "2").ends_with("enabled on→off"), "{history}");
    assert!(row(&history, "3").ends_with("enabled off→on"), "{history}");
    assert!(row(&history, "2").contains(" upsert "), "{history}");
    assert!(row(&history, "2").contains(" admin-from-env "), "{history}");

    assert_eq!(
        server.ok(&[
            "flags",
            "revert",
            "new_checkout",
            "--env",
            "dev",
            "--version",
            "2"
        ]),
        "reverted flag \"new_checkout\" in \"dev\" to its version 2: now version 4, revision 4\n"
    );
    let (_, now) = server.json(&["flags", "get", "new_checkout", "--env", "dev"]);
    assert_eq!(now["flag"]["enabled"], false);
    let err = server.fails(&[
        "flags",
        "revert",
        "new_checkout",
        "--env",
        "dev",
        "--version",
        "99",
    ]);
    assert!(
        err.contains("no version 99") && err.contains("404"),
        "{err}"
    );

    // A stale delete is refused; a current one is done.
    let err = server.fails(&[
        "flags",
        "delete",
        "new_checkout",
        "--env",
        "dev",
        "--if-version",
        "3",
    ]);
    assert!(err.contains("412"), "{err}");
    assert_eq!(
        server.ok(&["flags", "delete", "new_checkout", "--env", "dev"]),
        "deleted flag \"new_checkout\" from \"dev\" (it was version 4), revision 5\n"
    );
    let err = server.fails(&["flags", "get", "new_checkout", "--env", "dev"]);
    assert_eq!(
        err,
        "guidon: flag \"new_checkout\" not found in environment \"dev\" (404 not_found)"
    );
    assert_eq!(
        server.ok(&["flags", "list", "--env", "dev"]),
        "0 flags and 0 segments in \"dev\" at revision 5\n"
    );
    let history = server.ok(&["flags", "history", "new_checkout", "--env", "dev"]);
    let last = history.lines().last().expect("a last line");
    assert!(
        last.starts_with("4 ") && last.ends_with("deleted"),
        "{history}"
    );
}

#[test]
fn set_from_yaml_and_with_if_version() {
    let server = Server::start("yaml");
    server.ok(&["envs", "create", "dev"]);
    let yaml = server.file(
        "flag.yaml",
        "key: dark_mode\ndescription: Dark theme\nenabled: false\n",
    );
    // --if-version 0: only if it does not exist yet.
    let out = server.ok(&[
        "flags",
        "set",
        "--env",
        "dev",
        "--file",
        &yaml,
        "--if-version",
        "0",
    ]);
    assert!(out.starts_with("created flag \"dark_mode\""), "{out}");
    let err = server.fails(&[
        "flags",
        "set",
        "--env",
        "dev",
        "--file",
        &yaml,
        "--if-version",
        "0",
    ]);
    assert!(err.contains("412 version_mismatch"), "{err}");
    let out = server.ok(&[
        "flags",
        "set",
        "--env",
        "dev",
        "--file",
        &yaml,
        "--if-version",
        "1",
    ]);
    assert_eq!(
        out,
        "updated flag \"dark_mode\" in \"dev\": version 2, revision 2\n"
    );
    let (_, got) = server.json(&["flags", "get", "dark_mode", "--env", "dev"]);
    assert_eq!(
        got["flag"],
        json!({"key": "dark_mode", "description": "Dark theme", "enabled": false})
    );

    // A file that is not one flag is named before anything is sent.
    let whole = server.file("whole.json", r#"{"flags": [], "segments": []}"#);
    let err = server.fails(&["flags", "set", "--env", "dev", "--file", &whole]);
    assert!(err.contains("flags import"), "{err}");
    let broken = server.file("broken.json", r#"{"key": "x", "#);
    let err = server.fails(&["flags", "set", "--env", "dev", "--file", &broken]);
    assert!(err.contains("broken.json is not valid JSON"), "{err}");
}

#[test]
fn invalid_flags_fail_with_one_line_naming_the_path() {
    let server = Server::start("invalid");
    server.ok(&["envs", "create", "dev"]);
    let mut flag = checkout_flag();
    flag["variants"][1]["weight"] = json!(49.5);
    let file = server.file("bad.json", &flag.to_string());
    let err = server.fails(&["flags", "set", "--env", "dev", "--file", &file]);
    assert!(err.contains("422"), "{err}");
    assert!(
        err.contains("variants[1].weight: weights sum to 99.5, must be 100"),
        "{err}"
    );

    // Two problems: both, on the one line.
    flag["rollout"] = json!({"percentage": 120});
    let file = server.file("worse.json", &flag.to_string());
    let err = server.fails(&["flags", "set", "--env", "dev", "--file", &file]);
    assert!(err.contains("2 problems"), "{err}");
    assert!(err.contains("variants[1].weight: "), "{err}");
    assert!(err.contains("rollout.percentage: "), "{err}");

    // A field the model does not have: the server names it.
    let file = server.file(
        "unknown.json",
        r#"{"key": "x", "enabled": true, "colour": "red"}"#,
    );
    let err = server.fails(&["flags", "set", "--env", "dev", "--file", &file]);
    assert!(err.contains("colour") && err.contains("400"), "{err}");

    // Nothing was stored.
    assert!(
        server
            .ok(&["flags", "list", "--env", "dev"])
            .starts_with("0 flags")
    );
    let err = server.fails(&["flags", "list", "--env", "nope"]);
    assert_eq!(err, "guidon: unknown environment \"nope\" (404 not_found)");
    let err = server.fails(&["flags", "get", "../tokens", "--env", "dev"]);
    assert!(err.contains("invalid flag \"../tokens\""), "{err}");
}

#[test]
fn export_import_round_trip() {
    let server = Server::start("bulk");
    for env in ["staging", "prod", "qa"] {
        server.ok(&["envs", "create", env]);
    }
    let file = json!({
        "flags": [
            checkout_flag(),
            {
                "key": "beta_banner",
                "enabled": true,
                "rules": [{
                    "name": "testers",
                    "conditions": [{"operator": "in_segment", "values": ["testers"]}],
                    "serve": {"enabled": true}
                }],
                "rollout": {"percentage": 0}
            }
        ],
        "segments": [{"key": "testers", "included": ["user_1", "user_2"]}]
    });
    let path = server.file("staging.json", &file.to_string());
    let out = server.ok(&["flags", "import", "--env", "staging", "--file", &path]);
    assert!(
        out.starts_with("imported into \"staging\": revision 1, 3 changes\n"),
        "{out}"
    );
    assert!(out.contains("flag     new_checkout"), "{out}");
    assert!(out.contains("segment  testers"), "{out}");
    let list = server.ok(&["flags", "list", "--env", "staging"]);
    assert!(
        list.ends_with("2 flags and 1 segment in \"staging\" at revision 1\n"),
        "{list}"
    );
    assert!(
        row(&list, "beta_banner").contains(" 1 "),
        "one rule: {list}"
    );

    // Export is the file; importing it elsewhere gives the same file.
    let exported = server.ok(&["flags", "export", "--env", "staging"]);
    let exported_value: Value = serde_json::from_str(&exported).expect("export is JSON");
    let path = server.file("exported.json", &exported);
    server.ok(&["flags", "import", "--env", "prod", "--file", &path]);
    let prod: Value = serde_json::from_str(&server.ok(&["flags", "export", "--env", "prod"]))
        .expect("export is JSON");
    assert_eq!(prod, exported_value);
    // Importing what is there already changes nothing.
    assert_eq!(
        server.ok(&["flags", "import", "--env", "prod", "--file", &path]),
        "nothing to change in \"prod\": it already holds this file (revision 1)\n"
    );

    // The same through YAML.
    let yaml = server.ok(&["flags", "export", "--env", "staging", "--yaml"]);
    assert!(yaml.contains("key: new_checkout"), "{yaml}");
    let path = server.file("exported.yaml", &yaml);
    server.ok(&["flags", "import", "--env", "qa", "--file", &path]);
    let qa: Value = serde_json::from_str(&server.ok(&["flags", "export", "--env", "qa"]))
        .expect("export is JSON");
    assert_eq!(qa, exported_value);

    // A replacement deletes what the file lacks, in one revision.
    let smaller = json!({"flags": [checkout_flag()], "segments": []});
    let path = server.file("smaller.json", &smaller.to_string());
    let (_, done) = server.json(&["flags", "import", "--env", "qa", "--file", &path]);
    assert_eq!(done["revision"], 2);
    let ops: Vec<(&str, &str)> = done["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["op"].as_str().expect("op"),
                c["key"].as_str().expect("key"),
            )
        })
        .collect();
    assert_eq!(ops, [("delete", "beta_banner"), ("delete", "testers")]);

    // One flag given to import is refused before it deletes everything else.
    let one = server.file("one.json", &checkout_flag().to_string());
    let err = server.fails(&["flags", "import", "--env", "qa", "--file", &one]);
    assert!(err.contains("flags set"), "{err}");
    // An import that would leave a dangling reference is refused whole.
    let dangling = json!({"flags": file["flags"], "segments": []});
    let path = server.file("dangling.json", &dangling.to_string());
    let err = server.fails(&["flags", "import", "--env", "qa", "--file", &path]);
    assert!(err.contains("422") && err.contains("testers"), "{err}");
    assert!(err.contains("flags[1].rules[0].conditions[0]"), "{err}");
}

#[test]
fn envs_create_list_delete() {
    let server = Server::start("envs");
    // A new database starts with two environments.
    assert_eq!(
        server.ok(&["envs", "list"]),
        "NAME         REVISION\ndevelopment  0\nproduction   0\n"
    );
    server.ok(&["envs", "delete", "development"]);
    server.ok(&["envs", "delete", "production"]);
    assert_eq!(
        server.ok(&["envs", "list"]),
        "no environments (create one with `guidon envs create NAME`)\n"
    );
    server.ok(&["envs", "create", "dev"]);
    server.ok(&["envs", "create", "prod"]);
    let err = server.fails(&["envs", "create", "dev"]);
    assert_eq!(
        err,
        "guidon: environment \"dev\" already exists (409 conflict)"
    );
    let err = server.fails(&["envs", "create", "no/slash"]);
    assert!(err.contains("invalid environment \"no/slash\""), "{err}");

    let file = server.file("flag.json", &checkout_flag().to_string());
    server.ok(&["flags", "set", "--env", "dev", "--file", &file]);
    let list = server.ok(&["envs", "list"]);
    assert_eq!(list, "NAME  REVISION\ndev   1\nprod  0\n");

    let err = server.fails(&["envs", "delete", "dev"]);
    assert!(
        err.contains("is not empty (flags and segments left: 1)"),
        "{err}"
    );
    assert!(err.contains("409"), "{err}");
    assert_eq!(
        server.ok(&["envs", "delete", "dev", "--force"]),
        "deleted environment \"dev\"\n"
    );
    assert_eq!(
        server.ok(&["envs", "delete", "prod"]),
        "deleted environment \"prod\"\n"
    );
    let err = server.fails(&["envs", "delete", "prod"]);
    assert!(err.contains("404"), "{err}");
    let (_, envs) = server.json(&["envs", "list"]);
    assert_eq!(envs, json!({"environments": []}));
}

#[test]
fn token_create_list_revoke() {
    let server = Server::start("tokens");
    server.ok(&["envs", "create", "dev"]);
    let file = server.file("flag.json", &checkout_flag().to_string());
    server.ok(&["flags", "set", "--env", "dev", "--file", &file]);

    let out = server.ok(&["token", "create", "web", "--role", "sdk", "--env", "dev"]);
    let (head, secret) = out.split_once('\n').expect("two lines");
    assert_eq!(
        head,
        "created sdk token \"web\" for environment \"dev\"; its secret, shown only this once:"
    );
    let secret = secret.trim_end();
    assert!(secret.starts_with("gdn_") && secret.len() == 68, "{secret}");

    let list = server.ok(&["token", "list"]);
    assert!(list.starts_with("NAME "), "{list}");
    let web = row(&list, "web");
    assert!(
        web.contains(" sdk ") && web.contains(" dev ") && web.ends_with("active"),
        "{web}"
    );
    assert!(!list.contains(secret), "never the secret: {list}");

    // The sdk token reads its environment's flags, and may not write.
    let flags = server.run_as(Some(secret), &["flags", "list", "--env", "dev"]);
    assert!(
        succeeded(&[], &flags).contains("new_checkout"),
        "{}",
        text(&flags.stdout)
    );
    let args = ["flags", "delete", "new_checkout", "--env", "dev"];
    let err = failed(&args, &server.run_as(Some(secret), &args));
    assert!(
        err.contains("sdk token") && err.contains("403 forbidden"),
        "{err}"
    );

    let err = server.fails(&["token", "create", "web", "--role", "sdk", "--env", "dev"]);
    assert!(err.contains("409"), "{err}");
    let err = server.fails(&["token", "create", "loose", "--role", "sdk"]);
    assert!(
        err.contains("400"),
        "an sdk token needs an environment: {err}"
    );

    let (_, admin) = server.json(&["token", "create", "ci", "--role", "admin"]);
    assert_eq!(admin["name"], "ci");
    assert_eq!(admin["role"], "admin");
    let ci = admin["token"].as_str().expect("secret");
    let args = ["envs", "list"];
    assert!(succeeded(&args, &server.run_as(Some(ci), &args)).contains("dev"));

    assert_eq!(
        server.ok(&["token", "revoke", "web"]),
        "revoked token \"web\"\n"
    );
    assert!(
        row(&server.ok(&["token", "list"]), "web").ends_with("revoked"),
        "listed as revoked"
    );
    let args = ["flags", "list", "--env", "dev"];
    let err = failed(&args, &server.run_as(Some(secret), &args));
    assert!(err.contains("401 unauthorized"), "{err}");
    let err = server.fails(&["token", "revoke", "never-was"]);
    assert!(err.contains("404"), "{err}");
}

#[test]
fn users_add_list_set_role_reset_password_remove() {
    let server = Server::start("users");
    let with_password = |args: &[&str], password: &str| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &server.url, "--token", ADMIN]);
        guidon(&all, &[("GUIDON_USER_PASSWORD", password)])
    };
    let args = [
        "users",
        "add",
        "dana",
        "--role",
        "development=editor",
        "--role",
        "production=viewer",
    ];
    assert_eq!(
        succeeded(&args, &with_password(&args, "dana's password")),
        "added \"dana\" (development=editor, production=viewer)\n"
    );
    let list = server.ok(&["users", "list"]);
    assert!(list.starts_with("NAME "), "{list}");
    let dana = row(&list, "dana");
    assert!(
        dana.contains("development=editor, production=viewer") && dana.ends_with('-'),
        "never signed in: {dana}"
    );

    let (_, user) = server.json(&[
        "users",
        "set-role",
        "dana",
        "production=editor",
        "development=none",
    ]);
    assert_eq!(user["roles"], json!({"production": "editor"}));
    let err = server.fails(&["users", "set-role", "dana", "production=owner"]);
    assert!(err.contains("unknown role \"owner\""), "{err}");
    let err = server.fails(&["users", "set-role", "dana", "staging=viewer"]);
    assert!(
        err.contains("roles.staging") && err.contains("400"),
        "{err}"
    );
    let err = server.fails(&["users", "reset-password", "dana"]);
    assert!(err.contains("GUIDON_USER_PASSWORD"), "{err}");
    let args = ["users", "reset-password", "dana"];
    let err = failed(&args, &with_password(&args, "short"));
    assert!(err.contains("at least 8 characters"), "{err}");
    assert_eq!(
        succeeded(&args, &with_password(&args, "a longer password")),
        "password of \"dana\" set; their sessions ended\n"
    );

    // The last admin of "*" stays.
    let args = ["users", "add", "root", "--role", "*=admin"];
    succeeded(&args, &with_password(&args, "root's password"));
    let err = server.fails(&["users", "remove", "root"]);
    assert!(err.contains("409") && err.contains("last admin"), "{err}");
    let err = server.fails(&["users", "set-role", "root", "*=editor"]);
    assert!(err.contains("last admin"), "{err}");

    assert_eq!(
        server.ok(&["users", "remove", "dana"]),
        "removed \"dana\"\n"
    );
    let err = server.fails(&["users", "remove", "dana"]);
    assert!(
        err.contains("404") && err.contains("no person named"),
        "{err}"
    );
}

#[test]
fn json_output_is_the_servers_answer() {
    let server = Server::start("json");
    let (_, env) = server.json(&["envs", "create", "dev"]);
    assert_eq!((&env["name"], &env["revision"]), (&json!("dev"), &json!(0)));
    assert!(
        env["created_at_ms"].as_i64().is_some_and(|t| t > 0),
        "{env}"
    );
    let file = server.file("flag.json", &checkout_flag().to_string());
    let (_, set) = server.json(&["flags", "set", "--env", "dev", "--file", &file]);
    assert_eq!(
        set,
        json!({"flag": checkout_flag(), "version": 1, "revision": 1})
    );

    let (_, got) = server.json(&["flags", "get", "new_checkout", "--env", "dev"]);
    assert_eq!(got, set);

    // Verbatim: pretty-printed in the server's order (the export's is the
    // model's, not alphabetical).
    let (raw, list) = server.json(&["flags", "list", "--env", "dev"]);
    assert_eq!(list, json!({"flags": [checkout_flag()]}));
    let at = |needle: &str| {
        raw.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {raw}"))
    };
    assert!(at("\"key\"") < at("\"description\""), "{raw}");
    assert!(at("\"description\"") < at("\"enabled\""), "{raw}");
    assert!(at("\"enabled\"") < at("\"variants\""), "{raw}");
    assert!(at("\"variants\"") < at("\"rollout\""), "{raw}");
    assert!(
        raw.starts_with("{\n  \"flags\": [\n    {\n      \"key\": \"new_checkout\","),
        "{raw}"
    );
    let (_, toggled) = server.json(&["flags", "toggle", "new_checkout", "--env", "dev"]);
    assert_eq!(toggled["flag"]["enabled"], false);
    assert_eq!(toggled["version"], 2);
    let (_, history) = server.json(&["flags", "history", "new_checkout", "--env", "dev"]);
    let entries = history["history"].as_array().expect("history");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["before"]["enabled"], true);
    assert_eq!(entries[1]["after"]["enabled"], false);
    let (_, reverted) = server.json(&[
        "flags",
        "revert",
        "new_checkout",
        "--env",
        "dev",
        "--version",
        "1",
    ]);
    assert_eq!(reverted["flag"], checkout_flag());
    assert_eq!(reverted["version"], 3);
    let (_, envs) = server.json(&["envs", "list"]);
    let dev = envs["environments"]
        .as_array()
        .expect("environments")
        .iter()
        .find(|e| e["name"] == "dev");
    assert_eq!(dev.map(|e| &e["revision"]), Some(&json!(3)));
    let (_, tokens) = server.json(&["token", "list"]);
    assert_eq!(tokens["tokens"][0]["role"], "admin");
    let (_, deleted) = server.json(&["flags", "delete", "new_checkout", "--env", "dev"]);
    assert_eq!(
        deleted,
        json!({"deleted": "new_checkout", "version": 3, "revision": 4})
    );
    server.json(&["token", "create", "t", "--role", "sdk", "--env", "dev"]);
    // 204 answers have no body: the command says what it did.
    let (_, revoked) = server.json(&["token", "revoke", "t"]);
    assert_eq!(revoked, json!({"revoked": "t"}));
    let (_, deleted) = server.json(&["envs", "delete", "dev"]);
    assert_eq!(deleted, json!({"deleted": "dev"}));
    // Errors stay one line on stderr, JSON or not.
    let err = server.fails(&["envs", "delete", "dev", "--json"]);
    assert!(err.contains("404"), "{err}");
}

#[test]
fn server_and_token_from_the_environment_and_before_the_subcommand() {
    let server = Server::start("vars");
    let out = guidon(
        &["envs", "create", "dev"],
        &[("GUIDON_SERVER", &server.url), ("GUIDON_TOKEN", ADMIN)],
    );
    assert_eq!(succeeded(&[], &out), "created environment \"dev\"\n");
    // Options given before the subcommand; --server overrides GUIDON_SERVER.
    let out = guidon(
        &[
            "envs",
            "--server",
            &server.url,
            "--token",
            ADMIN,
            "--json",
            "list",
        ],
        &[("GUIDON_SERVER", "http://127.0.0.1:9")],
    );
    let envs: Value = serde_json::from_str(&succeeded(&[], &out)).expect("JSON");
    assert_eq!(envs["environments"][0]["name"], "dev");
    // host:port without a scheme is http.
    let bare = server.url.trim_start_matches("http://");
    let out = guidon(&["envs", "list", "--server", bare, "--token", ADMIN], &[]);
    assert!(succeeded(&[], &out).contains("dev"));
    // A trailing slash, or the API's own path, reach the same API.
    for url in [
        format!("{}/", server.url),
        format!("{}/api/v1/", server.url),
    ] {
        let out = guidon(&["envs", "list", "--server", &url, "--token", ADMIN], &[]);
        assert!(succeeded(&[], &out).contains("dev"), "{url}");
    }
}

#[test]
fn unreachable_server_is_one_line_naming_it() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let args = [
        "flags", "list", "--env", "dev", "--server", &url, "--token", "x",
    ];
    let err = failed(&args, &guidon(&args, &[]));
    assert!(
        err.starts_with(&format!("guidon: cannot connect to the server at {url}: ")),
        "{err}"
    );
    assert!(err.contains("GUIDON_SERVER"), "{err}");

    let args = ["envs", "list", "--server", "ftp://x", "--token", "x"];
    let err = failed(&args, &guidon(&args, &[]));
    assert!(err.contains("unsupported scheme"), "{err}");
}

#[test]
fn missing_or_unknown_token_is_one_line() {
    let server = Server::start("auth");
    let args = ["envs", "list"];
    let err = failed(&args, &server.run_as(None, &args));
    assert!(
        err.contains("--token") && err.contains("GUIDON_TOKEN") && err.contains("401"),
        "{err}"
    );
    // An empty GUIDON_TOKEN is no token.
    let out = guidon(
        &["envs", "list", "--server", &server.url],
        &[("GUIDON_TOKEN", "")],
    );
    let err = failed(&args, &out);
    assert!(err.contains("no token"), "{err}");

    let err = failed(&args, &server.run_as(Some("gdn_wrong"), &args));
    assert_eq!(
        err,
        "guidon: missing or unknown token: send Authorization: Bearer TOKEN (401 unauthorized); check --token or GUIDON_TOKEN"
    );
}

/// `guidon experiments results` over events sent with the admin client: a
/// table, or the answer as JSON, through any form of the server's URL.
#[test]
fn experiment_results_as_a_table_and_as_json() {
    use guidon_client::admin::{AdminClient, Body};

    let server = Server::start("results");
    let admin = AdminClient::new(&server.url, ADMIN).expect("an admin client");
    let send = |events: Vec<Value>| {
        let n = events.len() as u64;
        let receipt = server
            .server
            .block_on(admin.send_events("production", &events))
            .expect("events sent");
        assert_eq!((receipt.accepted, receipt.rejected.len()), (n, 0));
    };
    let flag = json!({"key": "checkout", "enabled": true, "variants": [
        {"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}]});
    let body = Body::json(&flag).expect("encodes");
    server
        .server
        .block_on(admin.set_flag("production", "checkout", body, None))
        .expect("flag created");
    let exposure = |i: u32, variant: &str| {
        json!({"type": "exposure", "event_id": format!("x-{i}"), "flag": "checkout",
               "variant": variant, "context": {"user_id": format!("u{i}")},
               "timestamp": "2026-11-24T12:00:00Z"})
    };
    let purchase = |i: u32| {
        json!({"type": "conversion", "event_id": format!("p-{i}"), "metric": "purchase",
               "value": 10.0, "context": {"user_id": format!("u{i}")},
               "timestamp": "2026-11-24T12:05:00Z"})
    };
    let results = ["experiments", "results", "checkout", "--env", "production"];
    let args = [&results[..], &["--metric", "purchase"]].concat();

    // One unit: a noun that agrees with its count.
    send(vec![exposure(0, "control")]);
    let table = server.ok(&args);
    assert!(table.contains("; 1 unit exposed, 0 in several"), "{table}");

    send(vec![
        exposure(1, "control"),
        exposure(2, "control"),
        exposure(3, "treatment"),
        exposure(4, "treatment"),
        purchase(1),
        purchase(3),
        purchase(4),
    ]);
    let table = server.ok(&args);
    assert!(table.contains("; 5 units exposed, 0 in several"), "{table}");
    let control: Vec<&str> = row(&table, "control").split_whitespace().collect();
    assert_eq!(control[..4], ["control", "(control)", "3", "1"], "{table}");
    let treatment: Vec<&str> = row(&table, "treatment").split_whitespace().collect();
    assert_eq!(treatment[1..3], ["2", "2"], "{table}");

    // The same results as JSON, through the API's own URL.
    let api = format!("{}/api/v1/", server.url);
    let with_api = [&args[..], &["--json", "--server", &api, "--token", ADMIN]].concat();
    let value: Value = serde_json::from_str(&succeeded(&with_api, &guidon(&with_api, &[])))
        .expect("--json prints JSON");
    assert_eq!(value["flag"], "checkout");
    assert_eq!(value["exposures"]["units"], 5);
    assert_eq!(value["variants"][1]["conversions"], 2);

    // Errors are one line, as for every admin command.
    let err = server.fails(&[
        "experiments",
        "results",
        "nope",
        "--env",
        "production",
        "--metric",
        "purchase",
    ]);
    assert!(err.contains("404 not_found"), "{err}");
    let err = server.fails(&[
        "experiments",
        "results",
        "checkout",
        "--env",
        "../x",
        "--metric",
        "purchase",
    ]);
    assert!(err.contains("invalid environment \"../x\""), "{err}");
}

/// `guidon metrics` and `guidon experiments create|list|results|stop`: a
/// catalogue made from options and from a file, an experiment over it,
/// its results for every metric with the verdicts, and one-line errors
/// naming the field.
#[test]
fn metrics_and_experiments_from_the_command_line() {
    use guidon_client::admin::{AdminClient, Body};

    let server = Server::start("catalogue");
    let admin = AdminClient::new(&server.url, ADMIN).expect("an admin client");
    let flag = json!({"key": "checkout", "enabled": true, "variants": [
        {"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}]});
    server
        .server
        .block_on(admin.set_flag(
            "production",
            "checkout",
            Body::json(&flag).expect("json"),
            None,
        ))
        .expect("flag created");
    let mut events = Vec::new();
    for i in 0..300 {
        let variant = if i % 2 == 0 { "control" } else { "treatment" };
        events.push(
            json!({"type": "exposure", "event_id": format!("x-{i}"), "flag": "checkout",
            "variant": variant, "context": {"user_id": format!("u{i}")},
            "timestamp": "2026-11-24T12:00:00Z"}),
        );
        // Treatment buys three times as often.
        if (variant == "control" && i % 10 == 0)
            || (variant == "treatment" && i % 10 < 6 && i % 2 == 1)
        {
            events.push(json!({"type": "conversion", "event_id": format!("p-{i}"),
                "metric": "purchase", "value": 20.0, "context": {"user_id": format!("u{i}")},
                "timestamp": "2026-11-24T12:05:00Z"}));
        }
    }
    let receipt = server
        .server
        .block_on(admin.send_events("production", &events))
        .expect("events sent");
    assert!(receipt.rejected.is_empty(), "{:?}", receipt.rejected);

    let out = server.ok(&[
        "metrics",
        "set",
        "buy",
        "--env",
        "production",
        "--kind",
        "binomial",
        "--event",
        "purchase",
    ]);
    assert!(out.contains("metric buy in production: version 1"), "{out}");
    let file = server.file(
        "revenue.json",
        r#"{"kind": "sum", "event": "purchase", "cap": {"value": 100}}"#,
    );
    server.ok(&[
        "metrics",
        "set",
        "revenue",
        "--env",
        "production",
        "--file",
        &file,
    ]);
    let list = server.ok(&["metrics", "list", "--env", "production"]);
    assert!(
        list.contains("purchase (capped at 100)") && list.ends_with("2 metrics\n"),
        "{list}"
    );
    // A bad definition: one line naming the field, nothing stored.
    let err = server.fails(&[
        "metrics",
        "set",
        "bad",
        "--env",
        "production",
        "--kind",
        "sum",
        "--event",
        "purchase",
        "--cap-percentile",
        "100",
    ]);
    assert!(err.contains("cap.percentile"), "{err}");
    let err = server.fails(&["metrics", "set", "bad", "--env", "production"]);
    assert!(err.contains("--kind"), "{err}");

    let err = server.fails(&[
        "experiments",
        "create",
        "exp",
        "--env",
        "production",
        "--flag",
        "checkout",
        "--primary",
        "buyy",
    ]);
    assert!(
        err.contains("primary_metric") && err.contains("buy, revenue"),
        "{err}"
    );
    let out = server.ok(&[
        "experiments",
        "create",
        "exp",
        "--env",
        "production",
        "--flag",
        "checkout",
        "--primary",
        "buy",
        "--secondary",
        "revenue",
        "--start",
        "2026-11-24T00:00:00Z",
        "--hypothesis",
        "one page sells more",
    ]);
    assert!(
        out.contains("experiment exp in production: version 1, from 2026-11-24T00:00:00Z"),
        "{out}"
    );
    let list = server.ok(&["experiments", "list", "--env", "production"]);
    assert!(
        row(&list, "exp").contains("running") && list.ends_with("1 experiment\n"),
        "{list}"
    );

    let report = server.ok(&["experiments", "results", "exp", "--env", "production"]);
    assert!(
        report.contains("Hypothesis: one page sells more"),
        "{report}"
    );
    assert!(
        report.contains("buy (primary, binomial, higher is better)"),
        "{report}"
    );
    assert!(
        report.contains("revenue (secondary, continuous, capped at 100"),
        "{report}"
    );
    assert!(report.contains("treatment: BETTER for buy"), "{report}");
    assert!(report.contains("correction holm over 2 tests"), "{report}");
    let (_, value) = server.json(&["experiments", "results", "exp", "--env", "production"]);
    assert_eq!(
        value["metrics"][0]["comparisons"][0]["outcome"], "better",
        "{value}"
    );
    let err = server.fails(&[
        "experiments",
        "results",
        "exp",
        "--env",
        "production",
        "--alpha",
        "0.1",
    ]);
    assert!(err.contains("need --metric"), "{err}");

    let plan = server.ok(&[
        "experiments",
        "plan",
        "exp",
        "--env",
        "production",
        "--mde",
        "0.2",
        "--days",
        "30",
    ]);
    assert!(
        plan.contains("To detect +20.0%: ") && plan.contains("units per arm"),
        "{plan}"
    );
    assert!(plan.contains("Detectable in 30 days: "), "{plan}");
    let daily = server.ok(&["experiments", "daily", "exp", "--env", "production"]);
    assert!(row(&daily, "2026-11-24").contains("150"), "{daily}");
    assert!(daily.contains("peeking"), "{daily}");
    let out = server.ok(&["experiments", "stop", "exp", "--env", "production"]);
    assert!(
        out.contains("experiment exp in production stopped at"),
        "{out}"
    );
    let err = server.fails(&["experiments", "stop", "exp", "--env", "production"]);
    assert!(err.contains("409"), "{err}");
    let err = server.fails(&["metrics", "delete", "buy", "--env", "production"]);
    assert!(err.contains("used by experiment \"exp\""), "{err}");
}

/// `guidon schedule add|list|cancel`: a change applied by the server when
/// due, a cancelled one, and one-line errors naming the field.
#[test]
fn schedule_from_the_command_line() {
    let server = Server::start("schedule");
    let file = server.file("flag.json", r#"{"key": "launch", "enabled": false}"#);
    server.ok(&["flags", "set", "--env", "production", "--file", &file]);
    let soon = (std::time::SystemTime::now() + std::time::Duration::from_secs(2))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let at = guidon_engine::Timestamp::from_second(i64::try_from(soon).expect("seconds"))
        .expect("time")
        .to_string();
    let out = server.ok(&[
        "schedule",
        "add",
        "launch",
        "--env",
        "production",
        "--at",
        &at,
        "--enable",
    ]);
    assert!(out.starts_with("scheduled #1 for "), "{out}");
    let out = server.ok(&[
        "schedule",
        "add",
        "launch",
        "--env",
        "production",
        "--at",
        "2031-01-01T09:00",
        "--time-zone",
        "America/New_York",
        "--rollout",
        "50",
    ]);
    assert!(
        out.contains("#2 for 2031-01-01T14:00:00Z (America/New_York)"),
        "{out}"
    );
    server.ok(&["schedule", "cancel", "2", "--env", "production"]);
    let err = server.fails(&[
        "schedule",
        "add",
        "launch",
        "--env",
        "production",
        "--at",
        "2020-01-01T00:00:00Z",
        "--disable",
    ]);
    assert!(err.contains("at") && err.contains("in the past"), "{err}");
    let err = server.fails(&[
        "schedule",
        "add",
        "launch",
        "--env",
        "production",
        "--at",
        &at,
    ]);
    assert!(err.contains("--enable"), "{err}");
    let err = server.fails(&["schedule", "cancel", "99", "--env", "production"]);
    assert!(err.contains("404"), "{err}");
    let mut list = String::new();
    for _ in 0..100 {
        list = server.ok(&["schedule", "list", "--env", "production"]);
        if row(&list, "1").contains("applied") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(row(&list, "1").contains("applied"), "{list}");
    assert!(row(&list, "2").contains("cancelled"), "{list}");
    let (_, flag) = server.json(&["flags", "get", "launch", "--env", "production"]);
    assert_eq!(flag["flag"]["enabled"], true, "{flag}");
}

/// Over HTTPS with a private CA: `--ca-cert` (or `GUIDON_CA_CERT`) makes
/// the commands trust it; without it they say, in one line, that the
/// certificate is not trusted and what to give.
#[test]
fn commands_speak_https_with_a_ca_cert() {
    let server = BlockingServer::start_tls("cli-https");
    let url = server.base().to_owned();
    assert!(url.starts_with("https://"), "{url}");
    let dir = TempDir::new("cli-https");
    let ca = dir.file(
        "ca.pem",
        &server.server().tls.as_ref().expect("TLS").ca_pem(),
    );
    let with_ca = |ca: &str| -> Output {
        let args = [
            "envs",
            "list",
            "--server",
            &url,
            "--token",
            ADMIN,
            "--ca-cert",
            ca,
        ];
        guidon(&args, &[])
    };
    let args = ["envs", "list", "--server", &url, "--token", ADMIN];
    let out = succeeded(&args, &with_ca(&ca));
    assert!(out.contains("production"), "{out}");
    let out = succeeded(&args, &guidon(&args, &[("GUIDON_CA_CERT", &ca)]));
    assert!(out.contains("production"), "{out}");

    let err = failed(&args, &guidon(&args, &[]));
    assert!(
        err.contains("TLS certificate this client does not trust")
            && err.contains("UnknownIssuer")
            && err.contains("--ca-cert"),
        "{err}"
    );
    let missing = dir.join("missing.pem").to_string_lossy().into_owned();
    let err = failed(&args, &with_ca(&missing));
    assert!(
        err.starts_with(&format!("guidon: --ca-cert {missing}: cannot read it")),
        "{err}"
    );
    let garbage = dir.file("garbage.pem", "hello");
    let err = failed(&args, &with_ca(&garbage));
    assert!(
        err.starts_with(&format!(
            "guidon: --ca-cert {garbage}: no certificate in it"
        )),
        "{err}"
    );
}

/// `guidon eval --env … --at/--revision` explains the past from the
/// server; `guidon flags preview` prints who would move where.
#[test]
fn time_travel_and_impact_preview_from_the_command_line() {
    let server = Server::start("cli_insight");
    let off = server.file("off.json", r#"{"key": "f", "enabled": false}"#);
    let on = server.file(
        "on.json",
        r#"{"key": "f", "enabled": true, "rollout": {"percentage": 100}}"#,
    );
    server.ok(&["flags", "set", "--env", "production", "--file", &off]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    server.ok(&["flags", "set", "--env", "production", "--file", &on]);
    let eval_args = |extra: &[&str]| -> Vec<String> {
        let base = ["eval", "--env", "production", "--flag", "f", "--context"];
        let mut args: Vec<String> = base.map(str::to_owned).to_vec();
        args.push(r#"{"user_id": "user_1"}"#.to_owned());
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let eval = |extra: &[&str]| -> Value {
        let args = eval_args(extra);
        let stdout = server.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let first = eval(&["--revision", "1"]);
    assert_eq!(first["enabled"], false, "{first}");
    assert_eq!(first["as_of"]["revision"], 1, "{first}");
    assert!(first["explanation"].is_array(), "{first}");
    let now = eval(&["--at", &guidon_engine::Timestamp::now().to_string()]);
    assert_eq!(now["enabled"], true, "{now}");
    assert_eq!(now["as_of"]["revision"], 2, "{now}");
    let eval_at = |at: &str| {
        let args = eval_args(&["--at", at]);
        server.fails(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let line = eval_at("2999-01-01T00:00:00Z");
    assert!(line.contains("future") && line.contains("422"), "{line}");
    let line = eval_at("last tuesday");
    assert!(line.contains("--at"), "{line}");

    // Preview turning it off, over ten users.
    let users: String = (0..10)
        .map(|i| format!("{{\"user_id\": \"user_{i}\"}}\n"))
        .collect();
    let contexts = server.file("users.jsonl", &users);
    let bad = server.file("bad.jsonl", "{\"user_id\": \"a\"}\nnot json\n");
    let preview_off = [
        "flags",
        "preview",
        "f",
        "--env",
        "production",
        "--file",
        &off,
    ];
    let preview = |contexts: &str| {
        let mut args = preview_off.to_vec();
        args.extend(["--contexts", contexts]);
        let output = server.run(&args);
        (
            args.into_iter().map(str::to_owned).collect::<Vec<_>>(),
            output,
        )
    };
    let (args, output) = preview(&contexts);
    let out = succeeded(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &output,
    );
    assert!(
        out.contains("over 10 contexts: 10 contexts would change"),
        "{out}"
    );
    let matrix = row(&out, "on");
    assert!(
        matrix.contains("off") && matrix.contains("10") && matrix.contains("100.0%"),
        "{out}"
    );
    assert!(out.contains("user_0: on -> off"), "{out}");
    // Nothing stored: it is still on.
    assert_eq!(eval(&[])["enabled"], true);
    // A bad line is named.
    let (args, output) = preview(&bad);
    let line = failed(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &output,
    );
    assert!(line.contains("line 2"), "{line}");

    // With a recent-contexts sample, no contexts are needed.
    let inner = server.server.server();
    server.server.block_on(inner.put(
        "/api/v1/envs/production/contexts/sample",
        json!({"size": 5, "retention_hours": 1}),
    ));
    for _ in 0..8 {
        eval(&[]);
    }
    let args = preview_off;
    let mut out = String::new();
    // Written to the store within a second or two.
    for _ in 0..30 {
        let output = server.run(&args);
        out = text(&output.stdout);
        if out.contains("(8 seen since") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        out.contains("over 5 contexts: 5 contexts would change")
            && out.contains("5 from the recent-contexts sample (8 seen since"),
        "{out}"
    );
}
