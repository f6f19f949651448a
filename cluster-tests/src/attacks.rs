//! The attack cases of access control, as one walk that runs against a
//! single node and against a cluster alike: admin changes go to one node,
//! tokens come from a second, and every client request goes to a third, so
//! on a cluster each case also shows that the change reached the node asked
//! (within a bounded wait: "within one commit"), and on one node the three
//! are the same.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

use crate::oci::{client, json_code, sha256};

const ROOT_PW: &str = "root-password-1";
const READER_PW: &str = "reader-password-1";

/// How long a change committed through one node may take to hold on the
/// node asked.
const REACH: Duration = Duration::from_secs(15);

/// The nodes of one walk. The nodes must be open (no accounts yet) and run
/// with `token_ttl_secs = 2` and `max_failed_logins_per_minute = 5`.
pub struct Nodes {
    /// Where accounts and rules are changed.
    pub admin: String,
    /// Where tokens are issued.
    pub issuer: String,
    /// Where every registry request goes.
    pub client: String,
    /// The nodes' log files, checked for secrets at the end.
    pub logs: Vec<PathBuf>,
}

impl Nodes {
    pub fn one(url: &str, log: PathBuf) -> Nodes {
        Nodes {
            admin: url.into(),
            issuer: url.into(),
            client: url.into(),
            logs: vec![log],
        }
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

impl Auth<'_> {
    fn apply(self, r: RequestBuilder) -> RequestBuilder {
        match self {
            Auth::None => r,
            Auth::Basic(u, p) => r.basic_auth(u, Some(p)),
            Auth::Bearer(t) => r.bearer_auth(t),
        }
    }
}

fn challenge(r: &Response) -> String {
    r.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn form(pairs: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse_with_params("http://form/", pairs).unwrap();
    url.query().unwrap_or("").to_owned()
}

struct Walk<'a> {
    c: Client,
    n: &'a Nodes,
}

impl Walk<'_> {
    /// Sends what `make` builds until the answer is `want`, for at most
    /// `REACH`, and returns that answer.
    async fn expect(
        &self,
        what: &str,
        want: StatusCode,
        make: impl Fn(&Client) -> RequestBuilder,
    ) -> Response {
        let deadline = Instant::now() + REACH;
        loop {
            let r = make(&self.c).send().await.unwrap();
            if r.status() == want {
                return r;
            }
            let got = r.status();
            assert!(
                Instant::now() < deadline,
                "{what}: {got} ({}), wanted {want}",
                r.text().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut r = self
            .c
            .request(method, format!("{}{path}", self.n.admin))
            .basic_auth("root", Some(ROOT_PW));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    async fn grant(&self, pattern: &str, subject: &str, actions: &str) {
        let r = self
            .admin(
                Method::POST,
                "/_stowage/access",
                Some(json!({"op": "grant", "pattern": pattern, "subject": subject, "actions": actions})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    /// A token from the issuer, once the issuer knows `user`.
    async fn token(&self, user: (&str, &str), scope: &str) -> Value {
        let url = format!("{}/token?service=stowage&scope={scope}", self.n.issuer);
        let r = self
            .expect("a token", StatusCode::OK, |c| {
                c.get(&url).basic_auth(user.0, Some(user.1))
            })
            .await;
        r.json().await.unwrap()
    }

    fn upload(&self, auth: Auth<'_>, repo: &str, blob: &[u8]) -> RequestBuilder {
        let d = sha256(blob);
        auth.apply(self.c.post(format!(
            "{}/v2/{repo}/blobs/uploads/?digest={d}",
            self.n.client
        )))
        .body(blob.to_vec())
    }

    fn get(&self, auth: Auth<'_>, path: &str) -> RequestBuilder {
        auth.apply(self.c.get(format!("{}{path}", self.n.client)))
    }

    async fn upload_as(&self, auth: Auth<'_>, repo: &str, blob: &[u8]) -> (StatusCode, String) {
        json_code(self.upload(auth, repo, blob).send().await.unwrap()).await
    }

    /// Uploads until the answer is `want` (the rules that allow or refuse
    /// it were changed through another node).
    async fn upload_until(
        &self,
        what: &str,
        want: StatusCode,
        auth: Auth<'_>,
        repo: &str,
        blob: &[u8],
    ) -> Response {
        self.expect(what, want, |_| self.upload(auth, repo, blob))
            .await
    }
}

/// Every attack case of the security issue, from an open node to a checked
/// one: missing, malformed, forged, expired and wrong-scope tokens, 403 for
/// a right not held, a revoked robot and its tokens, a private digest read
/// through another repository or a mount, `../` and encoded paths, the
/// catalog filtered, the admin API closed, the last admin kept, failed
/// logins limited, and no secret in any log.
pub async fn every_case(n: &Nodes) {
    let w = Walk { c: client(), n };
    let client_host = n.client.trim_start_matches("http://").to_owned();

    // Open: no accounts, anyone may push.
    assert_eq!(
        w.upload_as(Auth::None, "open/before", b"before users")
            .await
            .0,
        StatusCode::CREATED
    );
    let r =
        w.c.post(format!("{}/_stowage/users", n.admin))
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
    let r = w
        .expect("anonymous is challenged", StatusCode::UNAUTHORIZED, |_| {
            w.get(Auth::None, "/v2/")
        })
        .await;
    let realm = format!("Bearer realm=\"http://{client_host}/token\",service=\"stowage\"");
    assert!(challenge(&r).starts_with(&realm), "{}", challenge(&r));
    assert_eq!(json_code(r).await.1, "UNAUTHORIZED");
    let r = w
        .get(Auth::None, "/v2/open/before/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&r).contains("scope=\"repository:open/before:pull\""));
    w.expect("root logs in", StatusCode::OK, |_| {
        w.get(Auth::Basic("root", ROOT_PW), "/v2/")
    })
    .await;
    let r = w
        .get(Auth::Basic("root", "wrong-password"), "/v2/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_code(r).await,
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED".into())
    );

    // A reader with pull on a/**.
    let r = w
        .admin(
            Method::POST,
            "/_stowage/users",
            Some(json!({"name": "reader", "password": READER_PW})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    w.grant("a/**", "reader", "pull").await;
    let root = Auth::Basic("root", ROOT_PW);
    assert_eq!(
        w.upload_as(root, "a/x", b"layer of a/x").await.0,
        StatusCode::CREATED
    );
    let ax = sha256(b"layer of a/x");
    let reader = Auth::Basic("reader", READER_PW);
    w.expect("the reader pulls", StatusCode::OK, |_| {
        w.get(reader, &format!("/v2/a/x/blobs/{ax}"))
    })
    .await;
    assert_eq!(
        w.upload_as(reader, "a/x", b"not allowed").await,
        (StatusCode::FORBIDDEN, "DENIED".into()),
        "a user with pull only gets 403 on push"
    );

    // The token flow: the reader asks for pull and push and gets pull.
    let t = w
        .token(("reader", READER_PW), "repository:a/x:pull,push")
        .await;
    assert!(t["expires_in"].as_u64().is_some() && t["issued_at"].is_string());
    assert_eq!(t["scope"], "repository:a/x:pull");
    let reader_token = t["token"].as_str().unwrap().to_owned();
    assert_eq!(t["access_token"], t["token"]);
    let bearer = Auth::Bearer(&reader_token);
    let r = w
        .get(bearer, &format!("/v2/a/x/blobs/{ax}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the issuer's token holds on the node asked"
    );
    assert_eq!(
        w.upload_as(bearer, "a/x", b"not allowed").await,
        (StatusCode::FORBIDDEN, "DENIED".into()),
        "a pull token gets 403 on push"
    );
    // Root's token for pull only: pushing with it is a wrong-scope token.
    let t = w.token(("root", ROOT_PW), "repository:a/x:pull").await;
    let root_pull = t["token"].as_str().unwrap().to_owned();
    let r = w
        .upload(Auth::Bearer(&root_pull), "a/x", b"root with a pull token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let c = challenge(&r);
    assert!(
        c.contains("scope=\"repository:a/x:push\"") && c.contains("insufficient_scope"),
        "{c}"
    );
    // Missing, malformed and forged tokens.
    for bad in [
        "".to_owned(),
        "abc".to_owned(),
        format!("{}x", &reader_token[..reader_token.len() - 1]),
        format!("{reader_token}.x"),
    ] {
        let r = w
            .get(Auth::None, &format!("/v2/a/x/blobs/{ax}"))
            .header("Authorization", format!("Bearer {bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
        assert!(challenge(&r).starts_with("Bearer realm="));
        assert_eq!(json_code(r).await.1, "UNAUTHORIZED");
    }
    // OAuth2: the password grant with offline access gives a refresh token,
    // which buys new access tokens but is not one itself.
    let r =
        w.c.post(format!("{}/token", n.issuer))
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
        w.get(Auth::Bearer(&refresh), "/v2/")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r =
        w.c.post(format!("{}/token", n.client))
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
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "a refresh token from another node"
    );
    let t: Value = r.json().await.unwrap();
    let root_push = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        w.upload_as(Auth::Bearer(&root_push), "a/y", b"via refresh")
            .await
            .0,
        StatusCode::CREATED
    );
    // Expiry (2 s tokens, 5 s leeway).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let r = w
        .get(Auth::Bearer(&reader_token), &format!("/v2/a/x/blobs/{ax}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "an expired token");

    // A robot: pushes with its token as the password, and is refused the
    // moment its revocation reaches the node asked.
    let r = w
        .admin(
            Method::POST,
            "/_stowage/robots",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let robot_token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    w.grant("ci/**", "ci", "pull,push").await;
    let robot = Auth::Basic("ci", &robot_token);
    w.upload_until(
        "the robot pushes",
        StatusCode::CREATED,
        robot,
        "ci/app",
        b"built by ci",
    )
    .await;
    let t = w
        .token(("ci", &robot_token), "repository:ci/app:pull")
        .await;
    let robot_jwt = t["token"].as_str().unwrap().to_owned();
    let r = w.admin(Method::DELETE, "/_stowage/robots/ci", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    w.upload_until(
        "the revoked robot",
        StatusCode::UNAUTHORIZED,
        robot,
        "ci/app",
        b"after revoke",
    )
    .await;
    let r = w
        .get(Auth::Bearer(&robot_jwt), "/v2/ci/app/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "tokens issued to it die with it"
    );

    // A digest known from a private repository is not readable elsewhere,
    // neither directly nor through a mount.
    assert_eq!(
        w.upload_as(root, "p/secret", b"secret layer").await.0,
        StatusCode::CREATED
    );
    let secret = sha256(b"secret layer");
    w.grant("r/**", "reader", "pull,push").await;
    w.upload_until(
        "the reader pushes to r/",
        StatusCode::CREATED,
        reader,
        "r/mine",
        b"own layer",
    )
    .await;
    assert_eq!(
        w.get(reader, &format!("/v2/r/mine/blobs/{secret}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let r = reader
        .apply(w.c.post(format!(
            "{}/v2/r/mine/blobs/uploads/?mount={secret}&from=p/secret",
            n.client
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(json_code(r).await, (StatusCode::FORBIDDEN, "DENIED".into()));
    assert_eq!(
        w.get(reader, &format!("/v2/r/mine/blobs/{secret}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    for path in [
        format!("/v2/a/x/../../p/secret/blobs/{secret}"),
        format!("/v2/a/x/%2e%2e/%2e%2e/p/secret/blobs/{secret}"),
        format!("/v2/a/%2Fp%2Fsecret/blobs/{secret}"),
        format!("/v2/r/mine/..%2f..%2fp/secret/blobs/{secret}"),
    ] {
        let s = w.get(reader, &path).send().await.unwrap().status();
        assert!(
            s == StatusCode::NOT_FOUND
                || s == StatusCode::BAD_REQUEST
                || s == StatusCode::FORBIDDEN,
            "{path}: {s}"
        );
    }

    // The catalog and tag lists show only what the caller may pull.
    let r = w.get(reader, "/v2/_catalog").send().await.unwrap();
    let names: Value = r.json().await.unwrap();
    assert_eq!(
        names["repositories"],
        json!(["a/x", "a/y", "r/mine"]),
        "{names}"
    );
    let r = w.get(root, "/v2/_catalog").send().await.unwrap();
    let all: Value = r.json().await.unwrap();
    assert!(all["repositories"].as_array().unwrap().len() >= 5, "{all}");
    let r = w
        .get(reader, "/v2/p/secret/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(json_code(r).await, (StatusCode::FORBIDDEN, "DENIED".into()));

    // The admin API needs admin, on every node.
    for url in [&n.admin, &n.issuer, &n.client] {
        let r = reader
            .apply(w.c.post(format!("{url}/_stowage/users")))
            .json(&json!({"name": "mallory", "password": "mallory-pass"}))
            .send()
            .await
            .unwrap();
        assert_eq!(json_code(r).await, (StatusCode::FORBIDDEN, "DENIED".into()));
        let r = w.c.post(format!("{url}/_stowage/gc")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(challenge(&r).starts_with("Basic"));
        let r =
            w.c.post(format!("{url}/_stowage/members"))
                .body("{}")
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The last admin cannot be removed.
    let r = w.admin(Method::DELETE, "/_stowage/users/root", None).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // Listing accounts shows no secret.
    let r = w.admin(Method::GET, "/_stowage/users", None).await;
    let text = r.text().await.unwrap();
    assert!(
        text.contains("reader") && !text.contains("argon2"),
        "{text}"
    );
    let r = w.admin(Method::GET, "/_stowage/status", None).await;
    let status = r.text().await.unwrap();

    // Failed logins are limited per address; the log names them without
    // the secret. (Earlier failures on this node count too: the limit is 5
    // a minute.)
    let mut refused = 0;
    for _ in 0..6 {
        let s = w
            .get(Auth::Basic("reader", "guess-guess"), "/v2/")
            .send()
            .await
            .unwrap()
            .status();
        if s == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        refused += 1;
    }
    assert!(refused < 6, "no limit after {refused} failures");
    let r = w.get(reader, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let logs: String = n
        .logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
        .collect();
    assert!(logs.contains("failed login"), "{logs}");
    // The open status report keeps recent errors, but not failed logins:
    // who tried which name from where is not for anyone who can reach it.
    let open_status =
        w.c.get(format!("{}/_stowage/status", n.client))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert!(!open_status.contains("failed login"), "{open_status}");
    for secret in [
        ROOT_PW,
        READER_PW,
        "guess-guess",
        robot_token.as_str(),
        reader_token.as_str(),
        refresh.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached a log");
        assert!(!status.contains(secret), "a secret reached the status");
    }
}

/// An upload session belongs to its repository: once in use (one PATCH
/// made it live on its owner), no other repository name can read,
/// continue, finish or cancel it through any of `ask` (on a cluster the
/// others forward to the owner, which refuses), and it is still whole under
/// its own name afterwards. `open_on` opens it; `chunk_size` must be below
/// 5000 bytes so the PATCH writes a chunk.
pub async fn session_stays_in_its_repository(open_on: &str, ask: &[String]) {
    let c = client();
    let blob = crate::oci::data(31, 9000);
    let d = sha256(&blob);
    let r = c
        .post(format!("{open_on}/v2/own/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let path = r.headers()["location"].to_str().unwrap().to_owned();
    let r = c
        .patch(format!("{open_on}{path}"))
        .body(blob[..5000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    for node in ask {
        let other = format!("{node}{}", path.replace("/v2/own/", "/v2/other/"));
        let nested = format!("{node}{}", path.replace("/v2/own/", "/v2/own/deeper/"));
        for wrong in [&other, &nested] {
            for (what, req) in [
                ("GET", c.get(wrong)),
                ("PATCH", c.patch(wrong).body(blob[5000..6000].to_vec())),
                (
                    "PUT",
                    c.put(format!("{wrong}?digest={d}"))
                        .body(blob[5000..].to_vec()),
                ),
                ("DELETE", c.delete(wrong)),
            ] {
                let r = req.send().await.unwrap();
                assert_eq!(
                    json_code(r).await,
                    (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()),
                    "{what} {wrong}"
                );
            }
        }
        let r = c
            .head(format!("{node}/v2/other/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "no blob in the other repository"
        );
    }

    let last = ask.last().map_or(open_on, |s| s.as_str());
    let r = c.get(format!("{last}{path}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-4999");
    let r = c
        .put(format!("{last}{path}?digest={d}"))
        .body(blob[5000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for node in ask {
        let r = c
            .get(format!("{node}/v2/own/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().to_vec(), blob, "{node}");
    }
}

/// An upload id naming a node outside the membership (`absent`) is a
/// session nobody holds: 404 `BLOB_UPLOAD_UNKNOWN` on every node asked.
pub async fn ids_of_absent_nodes_are_unknown(ask: &[String], absent: u64) {
    let c = client();
    let d = sha256(b"x");
    for u in ask {
        let loc = format!("{u}/v2/a/blobs/uploads/{absent}-{}", "ab".repeat(16));
        for (what, req) in [
            ("GET", c.get(&loc)),
            ("PATCH", c.patch(&loc).body("x")),
            ("PUT", c.put(format!("{loc}?digest={d}")).body("x")),
            ("DELETE", c.delete(&loc)),
        ] {
            let r = req.send().await.unwrap();
            assert_eq!(
                json_code(r).await,
                (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()),
                "{what} {loc}"
            );
        }
    }
}
