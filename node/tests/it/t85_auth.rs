//! Access control against one real node: open until the first user, then
//! every request checked; Basic and the token flow; the attack cases of the
//! security issue (bad tokens, a revoked robot, mount and path tricks, the
//! last admin, failed-login limits) and secrets kept out of the log.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use stowage_cluster_tests::process::free_port;

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

const ROOT_PW: &str = "root-password-1";
const READER_PW: &str = "reader-password-1";

struct Ctx {
    c: reqwest::Client,
    url: String,
}

impl Ctx {
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .c
            .request(method, format!("{}{path}", self.url))
            .basic_auth("root", Some(ROOT_PW));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    async fn token(&self, user: Option<(&str, &str)>, scope: &str) -> (StatusCode, Value) {
        let mut r = self
            .c
            .get(format!("{}/token?service=stowage&scope={scope}", self.url));
        if let Some((u, p)) = user {
            r = r.basic_auth(u, Some(p));
        }
        let r = r.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn upload_as(&self, auth: Auth<'_>, repo: &str, blob: &[u8]) -> (StatusCode, String) {
        let d = sha256(blob);
        let r = auth
            .apply(
                self.c
                    .post(format!("{}/v2/{repo}/blobs/uploads/?digest={d}", self.url)),
            )
            .body(blob.to_vec())
            .send()
            .await
            .unwrap();
        json_code(r).await
    }

    async fn get_as(&self, auth: Auth<'_>, path: &str) -> reqwest::Response {
        auth.apply(self.c.get(format!("{}{path}", self.url)))
            .send()
            .await
            .unwrap()
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

impl Auth<'_> {
    fn apply(self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => r,
            Auth::Basic(u, p) => r.basic_auth(u, Some(p)),
            Auth::Bearer(t) => r.bearer_auth(t),
        }
    }
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_from_open_to_checked_with_every_attack_case() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("node.log");
    let data_dir = tmp.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = tmp.path().join("node.toml");
    // Short tokens, so one can expire within the test.
    std::fs::write(
        &config,
        "token_ttl_secs = 2\nmax_failed_logins_per_minute = 5\n",
    )
    .unwrap();
    let node = Node::launch(
        bin(),
        &data_dir,
        vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--config".into(),
            config.display().to_string(),
        ],
        &listen,
        Some(log.clone()),
    );
    let ctx = Ctx {
        c: client(),
        url: node.url.clone(),
    };

    // Open: no accounts, anyone may push.
    let (s, _) = ctx
        .upload_as(Auth::None, "open/before", b"before users")
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let r = ctx
        .c
        .post(format!("{}/_stowage/users", ctx.url))
        .json(&json!({"name": "root", "password": ROOT_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the first user is created openly"
    );

    // Checked from now on: the version check asks for a token.
    let r = ctx.get_as(Auth::None, "/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let realm = format!(
        "Bearer realm=\"http://{}/token\",service=\"stowage\"",
        node.host
    );
    assert!(challenge(&r).starts_with(&realm), "{}", challenge(&r));
    assert_eq!(json_code(r).await.1, "UNAUTHORIZED");
    let r = ctx.get_as(Auth::None, "/v2/open/before/tags/list").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).contains("scope=\"repository:open/before:pull\""));
    assert_eq!(
        ctx.get_as(Auth::Basic("root", ROOT_PW), "/v2/")
            .await
            .status(),
        StatusCode::OK
    );
    let r = ctx
        .get_as(Auth::Basic("root", "wrong-password"), "/v2/")
        .await;
    assert_eq!(
        json_code(r).await,
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
    );

    // A reader with pull on a/**.
    let r = ctx
        .admin(
            reqwest::Method::POST,
            "/_stowage/users",
            Some(json!({"name": "reader", "password": READER_PW})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = ctx
        .admin(
            reqwest::Method::POST,
            "/_stowage/access",
            Some(json!({"op": "grant", "pattern": "a/**", "subject": "reader", "actions": "pull"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (s, _) = ctx
        .upload_as(Auth::Basic("root", ROOT_PW), "a/x", b"layer of a/x")
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let ax = sha256(b"layer of a/x");
    let reader = Auth::Basic("reader", READER_PW);
    assert_eq!(
        ctx.get_as(reader, &format!("/v2/a/x/blobs/{ax}"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        ctx.upload_as(reader, "a/x", b"not allowed").await,
        (StatusCode::FORBIDDEN, "DENIED".into())
    );

    // The token flow: the reader asks for pull and push and gets pull.
    let (s, t) = ctx
        .token(Some(("reader", READER_PW)), "repository:a/x:pull,push")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(t["expires_in"].as_u64().is_some() && t["issued_at"].is_string());
    assert_eq!(t["scope"], "repository:a/x:pull");
    let reader_token = t["token"].as_str().unwrap().to_owned();
    assert_eq!(t["access_token"], t["token"]);
    let bearer = Auth::Bearer(&reader_token);
    assert_eq!(
        ctx.get_as(bearer, &format!("/v2/a/x/blobs/{ax}"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        ctx.upload_as(bearer, "a/x", b"not allowed").await,
        (StatusCode::FORBIDDEN, "DENIED".into()),
        "a user with pull only gets 403 on push"
    );
    // Root's token for pull only: pushing with it is a wrong-scope token.
    let (_, t) = ctx
        .token(Some(("root", ROOT_PW)), "repository:a/x:pull")
        .await;
    let root_pull = t["token"].as_str().unwrap().to_owned();
    let d = sha256(b"root with a pull token");
    let r = ctx
        .c
        .post(format!("{}/v2/a/x/blobs/uploads/?digest={d}", ctx.url))
        .bearer_auth(&root_pull)
        .body(b"root with a pull token".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let c = challenge(&r);
    assert!(
        c.contains("scope=\"repository:a/x:push\"") && c.contains("insufficient_scope"),
        "{c}"
    );
    // Malformed, forged and expired tokens.
    for bad in [
        "abc".to_owned(),
        format!("{}x", &reader_token[..reader_token.len() - 1]),
        format!("{reader_token}.x"),
    ] {
        let r = ctx
            .get_as(Auth::Bearer(&bad), &format!("/v2/a/x/blobs/{ax}"))
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert!(challenge(&r).starts_with("Bearer realm="));
    }
    // OAuth2: the password grant with offline access gives a refresh token,
    // which buys new access tokens but is not one itself.
    let r = ctx
        .c
        .post(format!("{}/token", ctx.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("username", "root"),
            ("password", ROOT_PW),
            ("service", "stowage"),
            ("scope", "repository:a/x:pull,push"),
            ("access_type", "offline"),
            ("client_id", "test"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        ctx.get_as(Auth::Bearer(&refresh), "/v2/").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = ctx
        .c
        .post(format!("{}/token", ctx.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "stowage"),
            ("scope", "repository:a/y:push"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.unwrap();
    let root_push = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        ctx.upload_as(Auth::Bearer(&root_push), "a/y", b"via refresh")
            .await
            .0,
        StatusCode::CREATED
    );
    // Expiry (2 s tokens, 5 s leeway).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let r = ctx
        .get_as(Auth::Bearer(&reader_token), &format!("/v2/a/x/blobs/{ax}"))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "an expired token");

    // A robot: pushes with its token as the password, and is refused the
    // moment it is revoked.
    let r = ctx
        .admin(
            reqwest::Method::POST,
            "/_stowage/robots",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let robot_token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    ctx.admin(
        reqwest::Method::POST,
        "/_stowage/access",
        Some(json!({"op": "grant", "pattern": "ci/**", "subject": "ci", "actions": "pull,push"})),
    )
    .await;
    let robot = Auth::Basic("ci", &robot_token);
    assert_eq!(
        ctx.upload_as(robot, "ci/app", b"built by ci").await.0,
        StatusCode::CREATED
    );
    let (_, t) = ctx
        .token(Some(("ci", &robot_token)), "repository:ci/app:pull")
        .await;
    let robot_jwt = t["token"].as_str().unwrap().to_owned();
    let r = ctx
        .admin(reqwest::Method::DELETE, "/_stowage/robots/ci", None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        ctx.upload_as(robot, "ci/app", b"after revoke").await.0,
        StatusCode::UNAUTHORIZED
    );
    let r = ctx
        .get_as(Auth::Bearer(&robot_jwt), "/v2/ci/app/tags/list")
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "tokens issued to it die with it"
    );

    // A digest known from a private repository is not readable elsewhere,
    // neither directly nor through a mount.
    assert_eq!(
        ctx.upload_as(Auth::Basic("root", ROOT_PW), "p/secret", b"secret layer")
            .await
            .0,
        StatusCode::CREATED
    );
    let secret = sha256(b"secret layer");
    ctx.admin(
        reqwest::Method::POST,
        "/_stowage/access",
        Some(
            json!({"op": "grant", "pattern": "r/**", "subject": "reader", "actions": "pull,push"}),
        ),
    )
    .await;
    assert_eq!(
        ctx.get_as(reader, &format!("/v2/r/mine/blobs/{secret}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let r = reader
        .apply(ctx.c.post(format!(
            "{}/v2/r/mine/blobs/uploads/?mount={secret}&from=p/secret",
            ctx.url
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(json_code(r).await, (StatusCode::FORBIDDEN, "DENIED".into()));
    assert_eq!(
        ctx.get_as(reader, &format!("/v2/r/mine/blobs/{secret}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    for path in [
        format!("/v2/a/x/../../p/secret/blobs/{secret}"),
        format!("/v2/a/x/%2e%2e/%2e%2e/p/secret/blobs/{secret}"),
        format!("/v2/a/%2Fp%2Fsecret/blobs/{secret}"),
    ] {
        let s = ctx.get_as(reader, &path).await.status();
        assert!(
            s == StatusCode::NOT_FOUND
                || s == StatusCode::BAD_REQUEST
                || s == StatusCode::FORBIDDEN,
            "{path}: {s}"
        );
    }

    // The catalog lists only what the caller may pull.
    let r = ctx.get_as(reader, "/v2/_catalog").await;
    let names: Value = r.json().await.unwrap();
    assert_eq!(names["repositories"], json!(["a/x", "a/y"]), "{names}");
    let r = ctx
        .get_as(Auth::Basic("root", ROOT_PW), "/v2/_catalog")
        .await;
    let all: Value = r.json().await.unwrap();
    assert!(all["repositories"].as_array().unwrap().len() >= 4, "{all}");

    // The admin API needs admin.
    let r = reader
        .apply(ctx.c.post(format!("{}/_stowage/users", ctx.url)))
        .json(&json!({"name": "mallory", "password": "mallory-pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_code(r).await, (StatusCode::FORBIDDEN, "DENIED".into()));
    let r = ctx
        .c
        .post(format!("{}/_stowage/gc", ctx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).starts_with("Basic"));
    let r = ctx
        .c
        .post(format!("{}/_stowage/members", ctx.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The last admin cannot be removed.
    let r = ctx
        .admin(reqwest::Method::DELETE, "/_stowage/users/root", None)
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Listing accounts shows no secret.
    let r = ctx
        .admin(reqwest::Method::GET, "/_stowage/users", None)
        .await;
    let text = r.text().await.unwrap();
    assert!(
        text.contains("reader") && !text.contains("argon2"),
        "{text}"
    );

    // Failed logins are limited per address; the log names them without
    // the secret.
    // (Earlier failures in this test count too: the limit is 5 a minute.)
    let mut refused = 0;
    for _ in 0..6 {
        let s = ctx
            .get_as(Auth::Basic("reader", "guess-guess"), "/v2/")
            .await
            .status();
        if s == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        refused += 1;
    }
    assert!(refused < 6, "no limit after {refused} failures");
    let r = ctx.get_as(Auth::Basic("reader", READER_PW), "/v2/").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log_text.contains("failed login"), "{log_text}");
    for secret in [
        ROOT_PW,
        READER_PW,
        "guess-guess",
        robot_token.as_str(),
        reader_token.as_str(),
    ] {
        assert!(!log_text.contains(secret), "a secret reached the log");
    }
}

#[test]
fn a_node_on_a_public_address_needs_accounts_or_an_explicit_open_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let listen = format!("0.0.0.0:{}", free_port());
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", &listen, "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin_password_file")
            && err.contains("--allow-anonymous")
            && err.contains("stowage user add"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_admin_from_a_file_and_the_cli_manage_users_robots_and_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let pw = tmp.path().join("admin.pw");
    std::fs::write(&pw, "bootstrap-pass\n").unwrap();
    let port = free_port();
    // Reachable beyond loopback, which the password file makes allowed.
    let listen = format!("0.0.0.0:{port}");
    let _node = Node::launch(
        bin(),
        &data_dir,
        vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--admin-password-file".into(),
            pw.display().to_string(),
        ],
        &listen,
        None,
    );
    let url = format!("http://127.0.0.1:{port}");
    let c = client();
    assert_eq!(
        c.get(format!("{url}/v2/")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "checked from the first request"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = c
            .get(format!("{url}/v2/"))
            .basic_auth("admin", Some("bootstrap-pass"))
            .send()
            .await
            .unwrap()
            .status();
        if s == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "admin never worked: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .env("STOWAGE_NODE", &url)
            .env("STOWAGE_USER", "admin")
            .env("STOWAGE_PASSWORD", "bootstrap-pass")
            .env("STOWAGE_NEW_PASSWORD", "dev-password-1")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = cli(&["user", "add", "dev"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&["user", "list"]);
    assert!(ok && out.contains("admin") && out.contains("dev"), "{out}");
    let (ok, token, err) = cli(&["robot", "create", "builder"]);
    assert!(ok, "{err}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("stw_"), "{token}");
    let rules = tmp.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\npattern = \"**\"\nsubject = \"admin\"\nactions = \"admin\"\n\n\
         [[rule]]\npattern = \"dev/**\"\nsubject = \"dev\"\nactions = [\"pull\", \"push\"]\n\n\
         [[rule]]\npattern = \"public/*\"\nsubject = \"anonymous\"\nactions = \"pull\"\n\n\
         [[rule]]\npattern = \"ci/**\"\nsubject = \"builder\"\nactions = \"push,pull\"\n",
    )
    .unwrap();
    let (ok, out, err) = cli(&["access", "apply", rules.to_str().unwrap(), "--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("+ push on dev/** for dev")
            && out.contains("+ pull on public/* for anonymous"),
        "{out}"
    );
    let (ok, out, _) = cli(&["access", "list"]);
    assert!(
        ok && !out.contains("dev/**"),
        "a dry run changes nothing: {out}"
    );
    let (ok, out, err) = cli(&["access", "apply", rules.to_str().unwrap()]);
    assert!(ok && out.contains("applied"), "{out}{err}");
    let (ok, out, _) = cli(&["access", "apply", rules.to_str().unwrap()]);
    assert!(ok && out.contains("already match"), "{out}");
    // The rules hold: dev pushes to dev/, anyone pulls public/*, the robot
    // pushes to ci/.
    let d = push_blob_as(
        &c,
        &url,
        "dev/app",
        b"dev layer",
        Some(("dev", "dev-password-1")),
    )
    .await;
    assert_eq!(d.0, StatusCode::CREATED);
    assert_eq!(
        push_blob_as(&c, &url, "ci/app", b"ci layer", Some(("builder", &token)))
            .await
            .0,
        StatusCode::CREATED
    );
    assert_eq!(
        push_blob_as(
            &c,
            &url,
            "public/x",
            b"pub",
            Some(("dev", "dev-password-1"))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        push_blob_as(
            &c,
            &url,
            "public/x",
            b"pub",
            Some(("admin", "bootstrap-pass"))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let (s, t) = {
        let r = c
            .get(format!(
                "{url}/token?service=stowage&scope=repository:public/x:pull"
            ))
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json::<Value>().await.unwrap())
    };
    assert_eq!(s, StatusCode::OK);
    let anon = t["token"].as_str().unwrap();
    let pubd = sha256(b"pub");
    let r = c
        .get(format!("{url}/v2/public/x/blobs/{pubd}"))
        .bearer_auth(anon)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "anonymous pulls with an anonymous token"
    );
    // A password change: the old one stops working.
    let out = std::process::Command::new(bin())
        .args(["user", "passwd", "dev"])
        .env("STOWAGE_NODE", &url)
        .env("STOWAGE_USER", "admin")
        .env("STOWAGE_PASSWORD", "bootstrap-pass")
        .env("STOWAGE_NEW_PASSWORD", "dev-password-2")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        push_blob_as(&c, &url, "dev/app", b"x", Some(("dev", "dev-password-1")))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        push_blob_as(&c, &url, "dev/app", b"x", Some(("dev", "dev-password-2")))
            .await
            .0,
        StatusCode::CREATED
    );
    let (ok, _, err) = cli(&["robot", "revoke", "builder"]);
    assert!(ok, "{err}");
    assert_eq!(
        push_blob_as(&c, &url, "ci/app", b"y", Some(("builder", &token)))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Without credentials the CLI is refused the admin API.
    let out = std::process::Command::new(bin())
        .args(["user", "list"])
        .env("STOWAGE_NODE", &url)
        .env_remove("STOWAGE_USER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

async fn push_blob_as(
    c: &reqwest::Client,
    url: &str,
    repo: &str,
    blob: &[u8],
    user: Option<(&str, &str)>,
) -> (StatusCode, String) {
    let d = sha256(blob);
    let mut r = c
        .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(blob.to_vec());
    if let Some((u, p)) = user {
        r = r.basic_auth(u, Some(p));
    }
    json_code(r.send().await.unwrap()).await
}
